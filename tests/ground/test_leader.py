"""Several grounds on one archive: exactly one runs the ops layer (the leader lock), the
others ingest and serve reads and refuse writes naming the leader; when the leader is
SIGKILLed another takes over within the stated fail-over time.

Real parts: two ``lunabase ground`` processes, a real mosquitto, the local PostgreSQL
(``LUNABASE_PG_DSN``, trust auth); the SQLite file lock is checked in-process.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ground.auth import AccountStore
from ground.client import GroundClient
from ground.errors import ApiError
from ground.ops.leader import FOLLOWER, LEADER, FileLeaderLock, Leadership, NotLeader, PgLeaderLock
from ground.testing import TEST_PASSWORD, add_test_accounts
from wire.inventory import Inventory, Node

PG_DSN = os.environ.get("LUNABASE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg() -> Iterator[str]:
    """PG_DSN with a schema of this test's own on the search path (dropped after)."""
    import psycopg

    schema = f"lb_leader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')


class GroundProc:
    """One ``lunabase ground`` process; ``api`` once it printed its client interface URL."""

    def __init__(self, name: str, tmp: Path, inv: Path, users: Path, broker_url: str, site: str, dsn: str) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        self.lines: queue.Queue[str] = queue.Queue()
        argv = [sys.executable, "-m", "lunabase.cli", "ground", "--inventory", str(inv), "--users", str(users),
                "--broker", broker_url, "--archive", dsn, "--ops-db", str(tmp / f"{name}-ops.db"),
                "--api-port", "0", "--client-id", f"lt-{name}-{os.getpid()}-{site}", "--ground-id", name,
                "--custody", "0", "--time-sync", "-1"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.log, "wb"),
                                     text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.api = ""
        deadline = time.monotonic() + 60
        while not self.api:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{name} did not start:\n{self.log.read_text()[-3000:]}") from None
            if "API " in line:
                self.api = line.rsplit("API ", 1)[1].strip()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


async def _role(c: GroundClient) -> str | None:
    try:
        return (await c.health()).get("role")
    except ApiError:
        return None  # dead


async def test_two_grounds_one_leader_and_failover_after_sigkill(broker, tmp_path, pg) -> None:
    site = f"lt{os.getpid() % 100000}"
    inv = Inventory(site, [Node("n01", bytes(range(32)), "pw")], ground_password="").save(tmp_path / "inv.toml")
    users = AccountStore.open(tmp_path / "users.json", create=True)
    add_test_accounts(users)
    users.save()
    grounds = [GroundProc(n, tmp_path, inv, tmp_path / "users.json", broker.url, site, pg) for n in ("g1", "g2")]
    clients = [GroundClient(g.api, user="commander", password=TEST_PASSWORD) for g in grounds]
    try:
        # exactly one leader (both started at once; the lock decides)
        roles = [await _role(c) for c in clients]
        assert sorted(roles) == [FOLLOWER, LEADER], roles  # type: ignore[type-var]
        li = roles.index(LEADER)
        leader, follower = grounds[li], grounds[1 - li]
        lc, fc = clients[li], clients[1 - li]
        h = await fc.health()
        part = h["parts"]["leader"]
        print("follower's view:", part)
        assert part["ok"] and part["role"] == FOLLOWER and part["lock"] == "postgresql advisory lock"
        assert part["leader"]["id"] == leader.name and part["leader"]["api"] == leader.api
        failover_s = float(part["failover_s"])
        # writes on the follower: refused, naming the leader; on the leader: accepted
        with pytest.raises(ApiError) as e:
            await fc.send_command("n01", "PING")
        print("refused:", e.value.status, e.value.message)
        assert e.value.status == 409 and leader.name in e.value.message and leader.api in e.value.message
        row = await lc.send_command("n01", "PING")
        assert row["stage"] in ("QUEUED", "SENT")  # n01 is not online: queued at the leader
        # the follower still serves reads
        assert [n["node"] for n in await fc.nodes()] == ["n01"]
        # SIGKILL the leader: the follower takes over within the stated time
        t_kill = time.monotonic()
        leader.kill()
        while await _role(fc) != LEADER:
            assert time.monotonic() - t_kill < failover_s + 5, "no take-over"
            await asyncio.sleep(0.1)
        took = time.monotonic() - t_kill
        print(f"take-over {took:.2f} s after the SIGKILL (stated bound {failover_s:g} s)")
        assert took <= failover_s
        h = await fc.health()
        assert h["role"] == LEADER and h["parts"]["leader"]["leader"]["id"] == follower.name
        row = await fc.send_command("n01", "PING")  # the new leader commands
        assert row["stage"] in ("QUEUED", "SENT")
        # the old one restarts: a follower now, naming the new leader
        again = GroundProc(leader.name, tmp_path, inv, tmp_path / "users.json", broker.url, site, pg)
        grounds.append(again)
        ac = GroundClient(again.api, user="commander", password=TEST_PASSWORD)
        clients.append(ac)
        h = await ac.health()
        assert h["role"] == FOLLOWER and h["parts"]["leader"]["leader"]["id"] == follower.name, h["parts"]["leader"]
    finally:
        for c in clients:
            await c.close()
        for g in grounds:
            g.kill()


async def test_pg_lock_exactly_one_holder_and_release(pg) -> None:
    site = f"lt-unit-{os.getpid()}"
    a = Leadership(PgLeaderLock(pg, site, {"id": "a", "api": None}))
    b = Leadership(PgLeaderLock(pg, site, {"id": "b", "api": None}))
    try:
        await a.step()
        await b.step()
        assert (a.role, b.role) == (LEADER, FOLLOWER)
        with pytest.raises(NotLeader, match="the leader is a "):
            b.guard("sending a command")
        a.guard("sending a command")  # the leader may
        a.close()  # its session ends: the lock is free
        await b.step()
        assert b.role == LEADER
        await a.step()
        assert a.role == FOLLOWER and a.leader() is not None and a.leader()["id"] == "b"  # type: ignore[index]
    finally:
        a.close()
        b.close()


async def test_sqlite_file_lock_one_holder_released_with_its_holder(tmp_path) -> None:
    path = tmp_path / "archive.db.leader"
    a = Leadership(FileLeaderLock(path, "moon", {"id": "a", "api": "http://a"}))
    b = Leadership(FileLeaderLock(path, "moon", {"id": "b", "api": "http://b"}))
    await a.step()
    await b.step()
    assert (a.role, b.role) == (LEADER, FOLLOWER)
    assert b.leader() is not None and b.leader()["api"] == "http://a"  # type: ignore[index]
    # a process holding the lock that dies: the kernel frees it
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    a.close()
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        await b.step()
        assert b.role == FOLLOWER
        p.send_signal(signal.SIGKILL)
        p.wait()
        await b.step()
        assert b.role == LEADER
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        b.close()


async def test_the_ops_layer_acts_once_with_two_grounds_on_one_archive(broker, tmp_path, pg) -> None:
    """Two grounds, one node that boots unsynced with a low free heap: one TIME_SYNC reaches
    it (from the leader, verified by the leader whichever ground archived the ACKs), one
    alarm is raised (at the leader), none at the follower."""
    from ground.service import GroundService
    from ground.testing import FakeNode, make_packet

    site = f"lo{os.getpid() % 100000}"
    key = bytes(range(32))
    inv = Inventory(site, [Node("n01", key, "pw")], ground_password="")
    gs = [GroundService(broker.url, inv, pg, ops_db=tmp_path / f"{n}-ops.db", api_port=0, light_time=0,
                        custody_s=0, client_id=f"lo-{n}-{os.getpid()}", ground_id=n) for n in ("g1", "g2")]
    async with FakeNode(broker.host, broker.port, site, "n01", key) as node:
        try:
            for g in gs:
                await g.start()
                await g.wait_connected()
            ops = [g.ops for g in gs]
            assert all(o is not None for o in ops)
            leaders = [o for o in ops if o is not None and o.leading()]
            followers = [o for o in ops if o is not None and not o.leading()]
            assert len(leaders) == 1 and len(followers) == 1
            lead, follow = leaders[0], followers[0]
            await node.publish_status("online", synced=False)
            await node.publish_tm(make_packet("HK", node="n01", free_heap=1000, boot_count=1))

            def synced() -> list[Any]:
                return [r for r in lead.commander.list() if r["command"] == "TIME_SYNC" and r["stage"] == "EXECUTED"]

            deadline = time.monotonic() + 15
            while not (synced() and lead.alarms.active()):
                assert time.monotonic() < deadline, (lead.commander.list(), lead.alarms.active(), node.received)
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)  # time for a second ground to have acted, if it would
            assert [r[1] for r in node.received] == [lead.dictionary.command("TIME_SYNC").opcode], node.received
            assert follow.commander.list() == [] and follow.alarms.active() == []
            assert [a["field"] for a in lead.alarms.active()] == ["free_heap"]
            # the follower still shows the node (liveness, latest values) for reads
            assert follow.nodes.get("n01").state == "ONLINE" and "HK" in follow.latest["n01"]
        finally:
            for g in gs:
                await g.stop()

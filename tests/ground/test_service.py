"""The whole ground against a real mosquitto: ingest -> ops -> API, a fake node answering TCs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from ground.auth import AccountStore
from ground.client import GroundClient
from ground.service import GroundService
from ground.testing import TEST_PASSWORD, FakeNode, GroundTestAPI, add_test_accounts, make_packet
from lunabase import ROOT
from wire import ccsds
from wire.inventory import Inventory


@pytest.fixture
def inv():
    return Inventory.generate("moon", ["n01", "n02"])


def service(broker, inv, tmp_path, **kw):
    g = GroundService(broker.url, inv, f"sqlite:///{tmp_path}/archive.db", api_port=0, light_time=0,
                      ack_timeout=3.0, exec_timeout=5.0, client_id=f"g-{os.getpid()}-{time.monotonic_ns()}", **kw)
    add_test_accounts(g.users)
    return g


def client(url: str, user: str = "operator") -> GroundClient:
    return GroundClient(url, user=user, password=TEST_PASSWORD)


async def until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_end_to_end_commands_and_telemetry(broker, inv, tmp_path):
    async with service(broker, inv, tmp_path) as g:
        await g.wait_connected()
        t = GroundTestAPI(g.ops)
        key = inv.node("n01").key
        async with FakeNode(broker.host, broker.port, "moon", "n01", key) as node:
            tele = asyncio.create_task(t.await_telemetry(lambda s: s.packet == "HK" and s["uptime"] >= 5))
            await asyncio.sleep(0)
            await node.publish_status("online", boot=3, hk_period=30)
            for i in range(6):
                await node.publish_tm(make_packet("HK", node="n01", uptime=i, free_heap=60000, boot_count=3, hk_period=30))
            s = await asyncio.wait_for(tele, 10)
            assert s["uptime"] == 5
            await until(lambda: g.ops.nodes.get("n01").state == "ONLINE", what="n01 online")
            done = await t.send_and_assert_command("n01", "PING", timeout=10)
            assert [h[0] for h in done["history"]] == ["QUEUED", "SENT", "ACCEPTED", "EXECUTED"]
            st, op, ctr, *_ = node.received[-1]
            assert st == ccsds.TC_OK and op == 1 and ctr == done["counter"]
            t.assert_no_alarm(node="n01")
            # listen first: the alarm can be raised before a listener added afterwards would see it
            alarm = asyncio.create_task(t.await_event(kind="alarm", node="n01", contains="free_heap", timeout=10))
            await asyncio.sleep(0)
            await node.publish_tm(make_packet("HK", node="n01", free_heap=5000, uptime=7, boot_count=3, hk_period=30))  # red < 8000
            ev = await alarm
            assert "RED" in ev["message"]
            with pytest.raises(AssertionError, match="free_heap"):
                t.assert_no_alarm(node="n01", param="HK.free_heap")
            # through the API, like the console and `lunabase command`
            async with client(g.api.url) as c:
                nodes = {x["node"]: x for x in await c.nodes()}
                assert nodes["n01"]["state"] == "ONLINE" and nodes["n01"]["boot"] == 3
                assert nodes["n01"]["link"]["packets"] >= 7
                row = await c.send_command("n01", "SET_RATE", {"sensor": "HK", "period_ms": 2000})
                row = await c.command(row["id"], wait=10)
                assert row["stage"] == "EXECUTED"
                hist = await c.params("n01", "HK", "uptime")
                assert hist["source"] == "archive" and hist["value"][:6] == [0, 1, 2, 3, 4, 5]
                pk = await c.packets("n01", limit=3)
                assert len(pk) == 3 and pk[0]["packet"] in ("HK", "ACK")
                ev = await c.events(kind="command")
                assert any("EXECUTED" in e["message"] for e in ev)


async def test_reject_and_timeout_stages(broker, inv, tmp_path):
    async with service(broker, inv, tmp_path) as g:
        await g.wait_connected()
        t = GroundTestAPI(g.ops)
        async with FakeNode(broker.host, broker.port, "moon", "n01", inv.node("n01").key, behaviour="reject") as node:
            await node.publish_status("online", hk_period=30)
            await until(lambda: g.ops.nodes.get("n01").state == "ONLINE")
            r = await t.send_and_assert_command("n01", "PING", expect="REJECTED")
            assert r["reason"] == "BAD_OPCODE"
            node.behaviour = "silent"
            r = await t.send_and_assert_command("n01", "PING", expect="TIMED_OUT", timeout=15)
            assert "ACCEPTED" in r["reason"]
        # a node with the wrong key answers BAD_MAC
        async with FakeNode(broker.host, broker.port, "moon", "n02", b"x" * 32) as bad:
            await bad.publish_status("online", hk_period=30)
            await until(lambda: g.ops.nodes.get("n02").state == "ONLINE")
            r = await t.send_and_assert_command("n02", "PING", expect="REJECTED")
            assert r["reason"] == "BAD_MAC"


async def test_queued_for_sleeping_node_released_on_wake_and_counter_survives_restart(broker, inv, tmp_path):
    key = inv.node("n01").key
    async with FakeNode(broker.host, broker.port, "moon", "n01", key) as node:
        async with service(broker, inv, tmp_path) as g:
            await g.wait_connected()
            await node.publish_status("asleep", next_contact=time.time() + 3600 - ccsds.EPOCH_UNIX, mode="NIGHT")
            await until(lambda: g.ops.nodes.get("n01").state == "ASLEEP", what="asleep")
            async with client(g.api.url) as c:
                q = await c.send_command("n01", "SET_RATE", {"sensor": "THERMAL", "period_ms": 60000},
                                         not_after=time.time() + 600)
                exp = await c.send_command("n01", "PING", not_after=time.time() + 0.3)
                # asleep with an announced contact an hour away: held (a stage in the history)
                assert q["stage"] == exp["stage"] == "HELD"
                assert [h[0] for h in q["history"]] == ["QUEUED", "HELD"] and "asleep until" in q["reason"]
                await asyncio.sleep(1.5)
                assert (await c.command(exp["id"]))["stage"] == "EXPIRED"
                assert node.received == []
                await node.publish_status("online", hk_period=30)  # the node wakes up
                row = await c.command(q["id"], wait=10)
                assert row["stage"] == "EXECUTED" and len(node.received) == 1
            first = row["counter"]
        # ground restarts with the same ops db: the node (which remembers its counter) accepts
        async with service(broker, inv, tmp_path) as g2:
            await g2.wait_connected()
            await until(lambda: g2.ops.nodes.get("n01").state == "ONLINE", what="retained online status")
            r = await GroundTestAPI(g2.ops).send_and_assert_command("n01", "PING")
            assert r["counter"] > first and node.received[-1][0] == ccsds.TC_OK


async def test_lost_on_last_will_and_garbage_counted(broker, inv, tmp_path):
    import aiomqtt

    async with service(broker, inv, tmp_path) as g:
        await g.wait_connected()
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish("lunabase/moon/n02/tm", b"\x00garbage" * 5, qos=1)
            await c.publish("lunabase/moon/n02/status", b'{"state": "offline"}', qos=1, retain=True)
        await until(lambda: g.ops.nodes.get("n02").state == "LOST", what="lost")
        async with client(g.api.url) as cl:
            links = await cl.links()
            await until(lambda: "n02" in g.ops.links() and g.ops.links()["n02"]["rejected_bytes"] > 0)
            ev = await cl.events(kind="node_state")
            assert "last will" in ev[0]["message"]
            assert links is not None


@pytest.mark.slow
def test_cli_ground_and_command(broker, inv, tmp_path):
    """`lunabase ground` as a process, `lunabase command --wait` against it, a fake node answering."""
    inv_path = inv.save(tmp_path / "base.toml")
    from sim.mosquitto import free_port

    port = free_port()
    users = tmp_path / "users.json"
    add_test_accounts(AccountStore.open(users, create=True))
    env = dict(os.environ, PYTHONUNBUFFERED="1", LUNABASE_USER="commander", LUNABASE_PASSWORD=TEST_PASSWORD)
    env.pop("LUNABASE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "ground.cli_ops", "ground", "--broker", broker.url, "--inventory",
                             str(inv_path), "--archive", f"sqlite:///{tmp_path}/a.db", "--api-port", str(port),
                             "--light-time", "0", "--users", str(users)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        async def scenario() -> tuple[int, str]:
            async with FakeNode(broker.host, broker.port, "moon", "n01", inv.node("n01").key) as node:
                await node.publish_status("online", hk_period=30)
                async with client(f"http://127.0.0.1:{port}", "commander2") as c:
                    for _ in range(200):
                        try:
                            if any(n["state"] == "ONLINE" for n in await c.nodes()):
                                break
                        except Exception:  # not up yet
                            pass
                        await asyncio.sleep(0.1)
                    r = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "ground.cli_ops", "command", "n01", "SET_MODE", "mode=SAFE",
                        "duration_s=0", "--confirm", "--wait", "--api", f"http://127.0.0.1:{port}", cwd=ROOT, env=env,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                    # hazardous: it waits for a second commander (this client) to approve
                    for _ in range(300):
                        rows = [x for x in await c.commands(5) if x["command"] == "SET_MODE"]
                        if rows and rows[0]["stage"] == "AWAITING_APPROVAL":
                            await c.approve_command(rows[0]["id"])
                            break
                        await asyncio.sleep(0.1)
                    out, _ = await r.communicate()
                return r.returncode or 0, out.decode()

        rc, out = asyncio.run(scenario())
        assert rc == 0, out
        assert "EXECUTED" in out and "ACCEPTED" in out and "AWAITING_APPROVAL" in out
        assert "APPROVED: approved by commander2" in out and "(as commander)" in out
        r = subprocess.run([sys.executable, "-m", "ground.cli_ops", "command", "n01", "REBOOT", "delay_s=1",
                            "--api", f"http://127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, env=env)
        assert r.returncode == 1 and "hazardous" in r.stderr
    finally:
        proc.terminate()
        try:
            log, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
    assert "API http://127.0.0.1:" in log and "broker" in log


async def test_remote_test_api_over_the_client_interface(broker, inv, tmp_path):
    from ground.testing import RemoteGroundTestAPI

    async with service(broker, inv, tmp_path) as g:
        await g.wait_connected()
        t = RemoteGroundTestAPI(g.api.url, "operator", TEST_PASSWORD)
        try:
            async with FakeNode(broker.host, broker.port, "moon", "n01", inv.node("n01").key) as node:
                await node.publish_status("online", hk_period=30)
                await until(lambda: g.ops.nodes.get("n01").state == "ONLINE")
                r = await t.send_and_assert_command("n01", "PING")
                assert r["stage"] == "EXECUTED"

                async def feed():
                    for i in range(50):
                        await node.publish_tm(make_packet("HK", node="n01", uptime=i, free_heap=60000, hk_period=30))
                        await asyncio.sleep(0.05)

                task = asyncio.create_task(feed())
                s = await t.await_telemetry(lambda s: s.packet == "HK" and s["uptime"] >= 10, timeout=15)
                assert s["uptime"] >= 10
                await task
                await t.assert_no_alarm(node="n01")
                ev_task = asyncio.create_task(t.await_event(kind="node_event", node="n01", timeout=15))
                while not ev_task.done():  # until the live connection is up and sees one
                    await node.publish_tm(make_packet("EVENT", node="n01", code=13, severity=2, text="batt low"))
                    await asyncio.wait({ev_task}, timeout=0.5)
                ev = ev_task.result()
                assert "LOW_BATTERY: batt low" in ev["message"] and ev["severity"] == "ERROR"
        finally:
            await t.close()


async def test_ground_over_tls_both_ways(inv, tmp_path):
    """mqtts to the broker verified against the site CA (and refused without it), the client
    interface served over HTTPS, verified by GroundClient with --ca."""
    from ground.broker import make_self_signed
    from sim.mosquitto import Mosquitto

    tls = make_self_signed(tmp_path / "tls")
    with Mosquitto(tls=tls) as b:
        assert b.url.startswith("mqtts://")
        svc = GroundService(b.url, inv, f"sqlite:///{tmp_path}/a.db", api_port=0, light_time=0, ca=tls.cafile,
                            tls_cert=tls.certfile, tls_key=tls.keyfile)
        add_test_accounts(svc.users)
        async with svc:
            await svc.wait_connected(15)
            assert svc.api is not None and svc.api.url.startswith("https://")
            url = svc.api.url.replace("127.0.0.1", "localhost")
            async with GroundClient(url, ca=str(tls.cafile), user="viewer", password=TEST_PASSWORD) as g:
                assert (await g.health())["ok"] in (True, False)  # answered over verified HTTPS
            async with GroundClient(url, user="viewer", password=TEST_PASSWORD) as g:  # the system's CAs do not know the site CA
                with pytest.raises(Exception) as e:  # GroundClient wraps aiohttp's error
                    await g.health()
                assert "certificate" in str(e.value).lower(), e.value
        # without the site CA the ground does not connect (the system's CAs did not sign it)
        bad = GroundService(b.url, inv, f"sqlite:///{tmp_path}/b.db", api_port=0, light_time=0)
        async with bad:
            with pytest.raises(TimeoutError):
                await bad.wait_connected(3)
            assert bad.ingest.connections == 0

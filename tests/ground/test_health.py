"""Health that tells the truth: each broken part turns /api/health false with its reason,
``lunabase health`` exits 0/1/2 on it, and the WebSocket/connection caps hold."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest

from ground.api import ApiServer
from ground.api.limits import ConnectionLimiter
from ground.client import GroundClient
from ground.ops import Operations, OpsStore
from ground.service import GroundService
from ground.testing import TEST_PASSWORD, FakeNode, add_test_accounts, make_packet, parse_packets, test_auth
from lunabase import ROOT
from wire.inventory import Inventory


@pytest.fixture
def inv():
    return Inventory.generate("moon", ["n01", "n02"])


def health_cli(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LUNABASE_TOKEN"}
    env.update(LUNABASE_USER="viewer", LUNABASE_PASSWORD=TEST_PASSWORD)  # monitoring logs in as a viewer
    return subprocess.run([sys.executable, "-m", "ground.cli_ops", "health", "--api", url, "--timeout", "5"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)


async def until_health(client: GroundClient, pred, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = await client.health()
        if pred(h) or time.monotonic() > deadline:
            return h
        await asyncio.sleep(0.2)


async def test_health_follows_the_parts(broker, inv, tmp_path) -> None:
    g = GroundService(broker.url, inv, f"sqlite:///{tmp_path}/archive.db", api_port=0, light_time=0,
                      client_id=f"h-{os.getpid()}-{time.monotonic_ns()}")
    add_test_accounts(g.users)
    await g.start()
    try:
        await g.wait_connected()
        assert g.api is not None and g.ops is not None
        c = GroundClient(g.api.url, user="viewer", password=TEST_PASSWORD)
        h = await until_health(c, lambda h: h["ok"] and h["parts"]["ticks"]["ticks"] >= 1)
        assert h["ok"] and h["reasons"] == []
        assert set(h["parts"]) >= {"ingest", "archive", "broker", "commands", "ticks", "api"}
        assert h["parts"]["archive"]["disk_free"] > 0 and h["parts"]["ticks"]["ticks"] >= 1
        r = await asyncio.to_thread(health_cli, g.api.url)
        assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr

        # the archive fails: ingest cannot commit, nothing is acknowledged -> not ok, with the reason
        real = g.archive.transaction

        def broken():
            raise OSError("No space left on device")

        g.archive.transaction = broken
        async with FakeNode(broker.host, broker.port, "moon", "n01", inv.node("n01").key) as node:
            await node.publish_tm(make_packet("HK", node="n01", uptime=1, free_heap=60000))
            h = await until_health(c, lambda h: not h["ok"])
            assert not h["ok"] and any("ingest: failing" in r and "No space" in r for r in h["reasons"]), h
            r = await asyncio.to_thread(health_cli, g.api.url)
            assert r.returncode == 1 and "No space" in r.stdout, r.stdout + r.stderr
            g.archive.transaction = real
            h = await until_health(c, lambda h: h["ok"], timeout=30)
            assert h["ok"], h["reasons"]
            assert g.archive.count_raw() == 1  # redelivered after the archive came back: nothing lost

        # the ops timers stop: not ok
        g.ops.last_tick = time.time() - 60
        g._tasks[2].cancel()  # the ops timers task
        h = await c.health()
        assert not h["ok"] and any(r.startswith("ticks:") for r in h["reasons"])
        await c.close()
    finally:
        await g.stop()
    r = await asyncio.to_thread(health_cli, "http://127.0.0.1:9")
    assert r.returncode == 2


async def test_a_jammed_command_queue_is_not_ok(inv, tmp_path) -> None:
    async def publish(topic: str, payload: bytes) -> None:
        pass

    ops = Operations(inv, OpsStore(tmp_path / "ops.db"), publish=publish, light_time=0)
    res, payload = parse_packets(make_packet("HK", node="n01", free_heap=60000))
    ops.on_packets("moon", "n01", res, np.ones(res.count, bool), time.time(), payload)
    await ops.tick()
    assert ops.health()["parts"]["commands"]["ok"]
    row = await ops.commander.submit("n01", "PING")
    assert row["stage"] == "SENT"
    # a command due for a minute that the queue does not release (e.g. its release keeps failing)
    c = dict(row, id=row["id"] + 1000, stage="QUEUED", submitted=time.time() - 60)
    ops.commander._cmds[c["id"]] = c
    h = ops.health()
    assert not h["ok"] and h["reasons"][0].startswith("commands:") and "not released" in h["reasons"][0]
    ops.store.close()


async def test_connection_and_websocket_caps(inv, tmp_path) -> None:
    ops = Operations(inv, OpsStore(tmp_path / "ops.db"))
    auth = test_auth()
    key = auth.accounts.create_key("viewer", "caps test", by="test")
    server = await ApiServer(ops, port=0, limiter=ConnectionLimiter(max_total=40, max_per_client=20),
                             max_ws=5, auth=auth).start()
    socks = []
    try:
        for _ in range(30):  # idle connections from one address: 20 admitted, the rest closed
            s = socket.create_connection(("127.0.0.1", server.port))
            socks.append(s)
        await asyncio.sleep(0.3)
        assert server.limiter.refused >= 10 and server.limiter.total <= 20
        for s in socks:
            s.close()
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as sess:
            wss = [await sess.ws_connect(server.url + "/api/ws") for _ in range(5)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await sess.ws_connect(server.url + "/api/ws")
            assert e.value.status == 503
            await wss[0].send_str("x" * 10000)  # over the frame cap: that client is closed
            msg = await wss[0].receive()
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await wss[0].receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            async with sess.get(server.url + "/api/health") as r:  # the others and HTTP still served
                assert r.status == 200
            for w in wss:
                await w.close()
    finally:
        for s in socks:
            s.close()
        await server.stop()
        ops.store.close()

"""The client interface: HTTP endpoints through GroundClient, several live clients, reconnect."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ground.api import ApiServer
from ground.auth import AccountStore, Auth
from ground.client import GroundClient, GroundError
from ground.ops import Operations, OpsStore
from ground.testing import TEST_PASSWORD, add_test_accounts, make_packet, parse_packets
from wire import ccsds
from wire.inventory import Inventory


@pytest.fixture
def inventory():
    return Inventory.generate("moon", ["n01", "n02"])


@pytest.fixture
async def ground(inventory, tmp_path):
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append((topic, payload))

    ops = Operations(inventory, OpsStore(tmp_path / "ops.db"), publish=publish, light_time=0)
    ops.sent = sent
    auth = Auth(AccountStore())
    add_test_accounts(auth.accounts)
    server = await ApiServer(ops, port=0, auth=auth).start()
    client = GroundClient(server.url, user="commander", password=TEST_PASSWORD)
    yield ops, server, client
    await client.close()
    await server.stop()


def feed(ops, node, *packets):
    res, payload = parse_packets(*packets)
    ops.on_packets(ops.site, node, res, np.ones(res.count, bool), time.time(), payload)


async def next_of(agen, type_, timeout=10.0):
    async def go():
        async for m in agen:
            if m["type"] == type_:
                return m
    return await asyncio.wait_for(go(), timeout)


async def test_reads(ground):
    ops, server, g = ground
    feed(ops, "n01", make_packet("HK", node="n01", free_heap=50000, cpu_temp=90, mode="NIGHT", boot_count=4),
         make_packet("POWER", node="n01", battery_voltage=3.9, battery_soc=80),
         make_packet("EVENT", node="n01", code=1, severity=0, text="booted", arg0=4))
    nodes = {n["node"]: n for n in await g.nodes()}
    assert nodes["n01"]["state"] == "ONLINE" and nodes["n02"]["state"] == "UNKNOWN"
    assert nodes["n01"]["soc"] == pytest.approx(80) and nodes["n01"]["mode"] == "NIGHT"
    assert nodes["n01"]["boot"] == 4 and nodes["n01"]["limit_state"] == "red"
    assert nodes["n01"]["link"]["packets"] == 3
    lat = await g.latest("n01")
    f = lat["packets"]["HK"]["fields"]
    assert f["cpu_temp"] == {"value": pytest.approx(90), "unit": "degC", "state": "red"}
    assert f["mode"]["text"] == "NIGHT" and f["free_heap"]["state"] == "ok"
    assert lat["packets"]["EVENT"]["fields"]["text"]["value"] == "booted"
    (alarm,) = await g.alarms()
    assert alarm["field"] == "cpu_temp"
    ev = await g.events(kind="node_event")
    assert ev[0]["message"].startswith("n01 BOOT: booted")
    d = await g.dictionary()
    assert {c["name"] for c in d["commands"]} >= {"PING", "SET_MODE"}
    assert next(c for c in d["commands"] if c["name"] == "SET_MODE")["hazardous"]
    pk = await g.packets("n01")
    assert len(pk) == 3 and pk[0]["packet"] == "EVENT" and bytes.fromhex(pk[0]["hex"])[:2] == b"\x08\x06"
    assert pk[-1]["fields"]["cpu_temp"] == pytest.approx(90)
    hist = await g.params("n01", "POWER", "battery_soc")
    assert hist["value"] == [pytest.approx(80)]
    links = await g.links()
    assert links["n01"]["errors"] == {}
    with pytest.raises(GroundError) as e:
        await g.latest("")
    assert e.value.status == 400


async def test_alarm_actions_and_commands(ground):
    ops, server, g = ground
    feed(ops, "n01", make_packet("HK", node="n01", free_heap=50000, cpu_temp=90))
    (a,) = await g.alarms()
    acked = await g.ack(a["id"])
    assert acked["state"] == "acknowledged" and acked["acked_by"] == "commander"
    assert (await g.shelve(a["id"], 5))["shelved_until"] > time.time()
    assert (await g.unshelve(a["id"]))["shelved_until"] is None
    with pytest.raises(GroundError) as e:
        await g.ack(999)
    assert e.value.status == 404
    # commands: validation, hazardous confirm, release to an online node
    with pytest.raises(GroundError, match="hazardous"):
        await g.send_command("n01", "REBOOT", {"delay_s": 1})
    with pytest.raises(GroundError, match="outside"):
        await g.send_command("n01", "SET_RATE", {"sensor": "HK", "period_ms": 0})
    with pytest.raises(GroundError, match="not the authenticated account") as e:  # no signing as someone else
        await g.send_command("n01", "SET_RATE", {"sensor": "HK", "period_ms": 500}, user="carol")
    assert e.value.status == 403
    c = await g.send_command("n01", "SET_RATE", {"sensor": "HK", "period_ms": 500})
    assert c["stage"] == "SENT" and c["user"] == "commander"
    topic, tc = ops.sent[-1]
    assert topic == "lunabase/moon/n01/cmd"
    st, opcode, counter, a0, a1, _ = ccsds.open_tc(ops.inventory.node("n01").key, b"n01", tc, 0, int(time.time() - ccsds.EPOCH_UNIX))
    assert st == ccsds.TC_OK and opcode == 2 and counter == c["counter"] if "counter" in c else True
    q = await g.send_command("n02", "PING")  # n02 never heard from: queued
    assert q["stage"] == "QUEUED"
    assert (await g.command(q["id"]))["stage"] == "QUEUED"
    assert [x["id"] for x in await g.commands()][:2] == [q["id"], c["id"]]


async def test_several_live_clients_and_decimation(ground):
    ops, server, g = ground
    runner = asyncio.create_task(ops.run())
    clients = [GroundClient(server.url, user="viewer", password=TEST_PASSWORD) for _ in range(3)]
    lives = [c.live() for c in clients]
    try:
        for lv in lives:
            assert (await next_of(lv, "snapshot"))["site"] == "moon"
        for i in range(200):  # a burst far above 5 Hz
            feed(ops, "n01", make_packet("HK", node="n01", free_heap=50000, uptime=i))
        for lv in lives:
            m = await next_of(lv, "param")
            assert m["node"] == "n01" and m["packets"]["HK"]["values"]["uptime"] == 199
        feed(ops, "n01", make_packet("HK", node="n01", free_heap=50000, cpu_temp=95))
        for lv in lives:
            m = await next_of(lv, "alarm")
            assert m["field"] == "cpu_temp" and m["state"] == "raised"
    finally:
        runner.cancel()
        for lv in lives:
            await lv.aclose()
        for c in clients:
            await c.close()


async def test_slow_client_is_resynced_not_waited_on(ground):
    ops, server, g = ground
    sub = ops.hub.subscribe()
    for i in range(ops.hub.maxsize + 10):
        ops.hub.publish({"type": "event", "i": i})
    msgs = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert msgs[0]["type"] == "resync" and sub.resyncs == 1 and len(msgs) == 10


async def test_live_reconnects_after_server_restart(ground):
    ops, server, g = ground
    port = server.port
    lv = g.live(retry=0.1, max_retry=0.3)
    try:
        await next_of(lv, "snapshot")
        await server.stop()
        assert (await asyncio.wait_for(lv.__anext__(), 10))["type"] == "disconnected"
        server2 = await ApiServer(ops, port=port, auth=server.auth).start()
        try:
            snap = await next_of(lv, "snapshot", timeout=15)
            assert {n["node"] for n in snap["nodes"]} == {"n01", "n02"}
            ops.store.event("test", "after restart")
            assert (await next_of(lv, "event"))["message"] == "after restart"
        finally:
            await server2.stop()
    finally:
        await lv.aclose()


async def test_seismic_waveform_decimated(ground):
    ops, server, g = ground
    t0 = time.time()
    for k in range(10):
        s = np.zeros((100, 3))
        s[:, 0] = np.arange(100) + 100 * k
        feed(ops, "n01", make_packet("SEISMIC", node="n01", t=t0 + k, rate=100, samples=s * 0.01))
    w = await g.seismic("n01", seconds=60, max_points=250)
    assert w["rate"] == 100 and w["decimation"] == 4 and len(w["x"]) == 250
    assert w["x"][0] == pytest.approx(1.5 * 0.01, abs=1e-6)


async def test_duplicates_are_not_reprocessed(ground):
    ops, server, g = ground
    a = make_packet("HK", node="n01", seq=10, free_heap=50000, uptime=1)
    b = make_packet("HK", node="n01", seq=11, free_heap=5000, uptime=2)  # would raise a red alarm
    res, payload = parse_packets(a, b)
    ops.on_packets("moon", "n01", res, np.array([True, False]), time.time(), payload)
    link = (await g.links())["n01"]
    assert (link["packets"], link["duplicates"]) == (1, 1)
    assert (await g.latest("n01"))["packets"]["HK"]["fields"]["uptime"]["value"] == 1
    assert await g.alarms() == []
    feed(ops, "n01", make_packet("HK", node="n01", seq=14, free_heap=50000))
    link = (await g.links())["n01"]
    assert (link["gaps"], link["missing"]) == (1, 3)  # one gap: 11, 12, 13 never arrived fresh


async def test_another_sites_telemetry_is_counted_not_watched(ground, caplog):
    ops, server, g = ground
    res, payload = parse_packets(make_packet("HK", node="n01", seq=1, free_heap=5000))  # red if watched
    ops.on_packets("mars", "n01", res, np.ones(res.count, bool), time.time(), payload)
    ops.on_status("mars", "n01", {"state": "online"}, time.time())
    assert ops.foreign == {"mars/n01": 2}
    assert "this ground watches site 'moon'" in caplog.text
    assert await g.alarms() == [] and "n01" not in await g.links()


async def test_liveness_is_an_alarm(ground):
    ops, server, g = ground
    feed(ops, "n01", make_packet("HK", node="n01", free_heap=50000))
    now = time.time()
    ops.nodes.tick(now + 5)
    (a,) = await g.alarms()
    assert (a["packet"], a["field"], a["severity"]) == ("NODE", "liveness", "yellow")
    ops.nodes.tick(now + 40)
    (a,) = await g.alarms()
    assert a["severity"] == "red" and a["max_severity"] == "red"
    feed(ops, "n01", make_packet("HK", node="n01", free_heap=50000))
    (a,) = await g.alarms()
    assert a["returned"] == 1  # back, but the operator still has to see it
    await g.ack(a["id"])
    assert await g.alarms() == []
    # a node that announced its sleep raises nothing
    ops.on_status("moon", "n02", {"state": "asleep", "next_contact": 0}, time.time())
    ops.nodes.tick(time.time() + 86400)
    assert [x["node"] for x in await g.alarms()] == ["n01"]  # n01 went silent; n02 is asleep


async def test_stalled_websocket_client_gets_resync_and_ingest_never_waits(ground):
    import aiohttp

    ops, server, g = ground
    ops.hub.maxsize = 200
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(server.url + "/api/ws", max_msg_size=0) as ws:
            await ws.send_json({"auth": await g.access_token()})  # in-band credential
            assert (await ws.receive_json())["type"] == "auth"
            assert (await ws.receive_json())["type"] == "snapshot"
            blob = "x" * 4000
            for i in range(6000):  # ~24 MB while the client reads nothing
                ops.hub.publish({"type": "event", "i": i, "pad": blob})
                if i % 500 == 0:
                    await asyncio.sleep(0.01)  # let the server's sender run and fill the socket
            kinds = []
            while "snapshot" not in kinds:
                kinds.append((await asyncio.wait_for(ws.receive_json(), 20))["type"])
            assert "resync" in kinds and kinds.index("resync") == len(kinds) - 2
            assert ops.hub.subscribers and next(iter(ops.hub.subscribers)).resyncs >= 1


def test_stride_keeps_the_newest():
    from ground.service import stride

    assert stride(list(range(10)), 20) == list(range(10))
    s = stride(list(range(1000)), 10)
    assert len(s) == 10 and s[-1] == 999 and s == sorted(s)

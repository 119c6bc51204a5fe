"""The client interface's response shapes against ground/client_types.py (docs/ground-api.md):
a key added or dropped on either side fails here, so clients never drift silently."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from ground import client_types as ct
from ground.api import ApiServer
from ground.auth import AccountStore, Auth
from ground.client import GroundClient
from ground.ops import Operations, OpsStore
from ground.testing import TEST_PASSWORD, add_test_accounts, make_packet, parse_packets
from wire.inventory import Inventory


def same_shape(row: dict[str, Any], td: Any) -> None:
    """Every required key present, no key the TypedDict does not name."""
    required, allowed, got = set(td.__required_keys__), set(td.__required_keys__) | set(td.__optional_keys__), set(row)
    assert required <= got <= allowed, (f"{td.__name__}: undocumented {sorted(got - allowed)}, "
                                        f"missing {sorted(required - got)}")


@pytest.fixture
async def ground(tmp_path):
    async def publish(topic: str, payload: bytes) -> None:
        pass

    ops = Operations(Inventory.generate("moon", ["n01"]), OpsStore(tmp_path / "ops.db"), publish=publish,
                     light_time=0)
    auth = Auth(AccountStore())
    add_test_accounts(auth.accounts)
    server = await ApiServer(ops, port=0, auth=auth).start()
    client = GroundClient(server.url, user="commander", password=TEST_PASSWORD)
    res, payload = parse_packets(
        make_packet("HK", node="n01", free_heap=50000, cpu_temp=90, mode="NIGHT"),
        make_packet("SEISMIC", node="n01", samples=np.ones((100, 3))),
        make_packet("EVENT", node="n01", code=1, severity=0, text="booted"))
    ops.on_packets("moon", "n01", res, np.ones(res.count, bool), time.time(), payload)
    yield client
    await client.close()
    await server.stop()


async def test_every_response_has_its_documented_shape(ground: GroundClient) -> None:
    g = ground
    (node,) = await g.nodes()
    same_shape(node, ct.NodeView)
    same_shape(node["link"], ct.LinkCounters)
    same_shape((await g.links())["n01"], ct.LinkCounters)
    latest = await g.latest("n01")
    same_shape(latest, ct.LatestView)
    for p in latest["packets"].values():
        same_shape(p, ct.LatestPacket)
        for f in p["fields"].values():
            same_shape(f, ct.FieldValue)
    same_shape(await g.params("n01", "HK", "cpu_temp"), ct.ParamHistory)
    (alarm,) = await g.alarms()
    same_shape(alarm, ct.Alarm)
    same_shape((await g.events())[0], ct.Event)
    cmd = await g.send_command("n01", "PING")
    same_shape(cmd, ct.CommandRow)
    same_shape((await g.commands())[0], ct.CommandRow)
    same_shape((await g.packets("n01"))[0], ct.PacketRow)
    same_shape(await g.seismic("n01"), ct.SeismicView)


async def test_gaps_have_their_documented_shape(tmp_path) -> None:
    """``GET /api/gaps`` with an archive holding a gap: the Gap, refill and link shapes."""
    from ground.archive import open_archive, unix_to_ticks
    from ground.errors import ApiError
    from ground.ingest.testing import hk
    from ground.parse import Parser

    async def publish(topic: str, payload: bytes) -> None:
        pass

    ops = Operations(Inventory.generate("moon", ["n01"]), OpsStore(tmp_path / "ops.db"), publish=publish,
                     light_time=0)
    a = open_archive(f"sqlite:///{tmp_path}/a.db")
    a.gap_settle_s = 0.0
    ops.refiller.archive = a
    payload = b"".join(hk(s, unix_to_ticks(time.time() - 10 + s)) for s in (0, 1, 5))
    with a.transaction() as tx:
        tx.append_packets("moon", "n01", Parser().parse(payload), payload, time.time())
    auth = Auth(AccountStore())
    add_test_accounts(auth.accounts)
    server = await ApiServer(ops, port=0, auth=auth).start()
    g = GroundClient(server.url, user="viewer", password=TEST_PASSWORD)
    try:
        await ops.refiller.tick(time.time() + 5)  # asks for it (the node is not ONLINE: it waits)
        view = await g.gaps()
        same_shape(view, ct.GapsView)
        same_shape(view["refill"], ct.RefillView)
        (gap,) = view["gaps"]
        same_shape(gap, ct.Gap)
        assert (gap["first"], gap["last"], gap["missing"], gap["state"]) == (2, 4, 3, "open")
        same_shape(view["refill"]["nodes"]["n01"], ct.RefillNode)
        assert view["refill"]["nodes"]["n01"]["waiting"] == "node UNKNOWN"
        assert (await g.gaps(state="filled"))["gaps"] == []
        with pytest.raises(ApiError) as e:
            await g.gaps(state="bogus")
        assert e.value.status == 400
    finally:
        await g.close()
        await server.stop()
        a.close()


async def test_pushes_have_the_shapes_of_the_responses(ground: GroundClient) -> None:
    """The WebSocket snapshot and the alarm/command pushes carry the rows GET answers."""
    import asyncio

    g = ground
    seen: dict[str, dict[str, Any]] = {}

    async def watch() -> None:
        async for m in g.live():
            if m["type"] == "snapshot" and "snapshot" not in seen:
                seen["snapshot"] = m
                (alarm,) = await g.alarms()
                await g.ack(alarm["id"])  # an alarm push
                await g.send_command("n01", "PING")  # command pushes
            elif m["type"] in ("alarm", "command"):
                seen.setdefault(m["type"], m)
            if {"snapshot", "alarm", "command"} <= set(seen):
                return

    await asyncio.wait_for(watch(), 15)
    snap = seen["snapshot"]
    for n in snap["nodes"]:
        same_shape(n, ct.NodeView)
    for a in snap["alarms"]:
        same_shape(a, ct.Alarm)
    for lk in snap["links"].values():
        same_shape(lk, ct.LinkCounters)
    same_shape({k: v for k, v in seen["alarm"].items() if k != "type"}, ct.Alarm)
    same_shape({k: v for k, v in seen["command"].items() if k != "type"}, ct.CommandRow)

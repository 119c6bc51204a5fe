"""Soak: a minute of valid and hostile MQTT traffic through a real mosquitto into a real ground.

Every valid packet is archived exactly once, every hostile message is counted under its
reason, the process's RSS stays bounded (printed), ``/api/health`` stays ok while the
ground copes, and turns false, with the reason, when the broker really goes away.
``LUNABASE_SOAK_S`` changes the duration (default 60 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import aiomqtt
import pytest

from ground.archive import unix_to_ticks
from ground.client import GroundClient
from ground.ingest import QUARANTINE_REASONS
from ground.ingest.testing import hk
from ground.service import GroundService
from ground.testing import TEST_PASSWORD, add_test_accounts
from sim.mosquitto import Mosquitto
from wire import ccsds
from wire.inventory import Inventory

NODES = ["n01", "n02", "n03"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hostile(rng: random.Random, i: int) -> tuple[str, bytes, str | None]:
    """(topic, payload, quarantine reason or None for bytes the parser rejects)."""
    k = i % 9
    if k == 0:
        return "lunabase/moon/n01/status", b'{"state":"online","x":' + b"[" * 2000 + b"]" * 2000 + b"}", "too_deep"
    if k == 1:
        return "lunabase/moon/n02/status", b'{"state":"online","pad":"' + b"x" * 200_000 + b'"}', "oversized"
    if k == 2:
        return "lunabase/moon/n03/status", b"\xff\xfe\xfd{not json", "bad_status"
    if k == 3:
        return "lunabase/moon/n01/status", json.dumps({"state": "online", "hk_period": "soon"}).encode(), "bad_status"
    if k == 4:
        return f"lunabase/moon/stranger{i}/tm", hk(i % ccsds.SEQ_MOD, unix_to_ticks(time.time())), "unknown_node"
    if k == 5:
        return f"lunabase/moon/N01 {i}/tm", b"x", "bad_topic"  # matches the subscription, not a node name
    if k == 6:
        return "lunabase/moon/n02/tm", b"", "empty"
    if k == 7:
        return "lunabase/moon/n03/tm", os.urandom(300 * 1024), "oversized"
    return "lunabase/moon/n01/tm", bytes([0x08, 0x01]) + rng.randbytes(40), None  # garbage: parser rejects


@pytest.mark.slow
async def test_soak_valid_and_hostile(broker: Mosquitto, tmp_path) -> None:
    duration = float(os.environ.get("LUNABASE_SOAK_S", "60"))
    inv = Inventory.generate("moon", NODES)
    g = GroundService(broker.url, inv, f"sqlite:///{tmp_path}/archive.db", api_port=0, light_time=0,
                      client_id=f"soak-{os.getpid()}")
    add_test_accounts(g.users)
    await g.start()
    await g.wait_connected()
    client = GroundClient(g.api.url, user="operator", password=TEST_PASSWORD)  # type: ignore[union-attr]
    rng = random.Random(12)
    sent = dict.fromkeys(NODES, 0)
    expect: dict[str, int] = {}
    not_ok: list[tuple[float, list[str]]] = []
    rss0 = rss_mb()
    rss_max = rss0
    t0 = time.time()
    base = t0 - 3600.0  # time tags: unique per (node, seq), an hour back (a replayed pass)
    i = garbage = 0
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"soak-pub-{os.getpid()}") as pub:
        next_health = time.monotonic()
        while time.time() - t0 < duration:
            for n in NODES:  # 3 nodes x 10 packets per 0.2 s round: 150 packets/s
                batch = b"".join(hk((sent[n] + k) % ccsds.SEQ_MOD, unix_to_ticks(base + (sent[n] + k) * 0.01),
                                    uptime=sent[n] + k, free_heap=60000) for k in range(10))
                await pub.publish(f"lunabase/moon/{n}/tm", batch, qos=1)
                sent[n] += 10
            for _ in range(3):
                topic, payload, reason = hostile(rng, i)
                i += 1
                await pub.publish(topic, payload, qos=1)
                if reason:
                    expect[reason] = expect.get(reason, 0) + 1
                else:
                    garbage += 1
            if time.monotonic() >= next_health:
                next_health += 1.0
                h = await client.health()
                if not h["ok"]:
                    not_ok.append((time.time() - t0, h["reasons"]))
                rss_max = max(rss_max, rss_mb())
            await asyncio.sleep(0.2)
        await pub.publish("lunabase/moon/n01/status", json.dumps({"state": "online"}).encode(), qos=1)
    total = sum(sent.values())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and g.archive.count_raw() < total:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the last hostile messages are in the same stream
    q = g.ingest.pipeline.quarantine  # type: ignore[union-attr]
    print(f"\nsoak {duration:.0f} s: {total} valid packets, {i} hostile messages; RSS {rss0:.0f} MB at start, "
          f"{rss_max:.0f} MB max, {rss_mb():.0f} MB at end; quarantined {q}")
    for n in NODES:
        assert g.archive.count_raw(node=n) == sent[n], n
    assert g.archive.count_raw() == total  # exactly once: strangers were not archived
    assert q == expect
    links = await client.links()
    parser_rejects = {r: c for r, c in links["n01"]["errors"].items() if r not in QUARANTINE_REASONS}
    assert sum(parser_rejects.values()) >= garbage, links["n01"]["errors"]
    h = await client.health()
    assert h["ok"], h["reasons"]
    assert not_ok == [], not_ok
    assert h["parts"]["ingest"]["quarantined_total"] == sum(expect.values())
    assert rss_max - rss0 < 300, f"RSS grew {rss_max - rss0:.0f} MB"
    # a command is still released to a node in contact
    row = await client.send_command("n01", "PING")
    assert row["stage"] == "SENT"
    # honest when it is not ok: the broker goes away
    broker.stop()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        h = await client.health()
        if not h["ok"]:
            break
        await asyncio.sleep(0.2)
    assert not h["ok"] and any(r.startswith("broker") for r in h["reasons"]), h
    await client.close()
    await g.stop()

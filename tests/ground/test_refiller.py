"""The refiller's rules (ground/ops/refill.py) against a real SQLite archive, commands faked:
what it asks for, when it waits (asleep, link down, light time, rate), when it gives up."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ground.archive import open_archive, unix_to_ticks
from ground.ingest.testing import hk
from ground.ops.refill import REFILL_USER, Refiller
from ground.parse import Parser

T0 = 1_780_000_000.0


class Fake:
    """The commander and node state the refiller talks to."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.stage: dict[int, str] = {}
        self.state = "ONLINE"

    async def submit(self, node: str, command: str, args: dict[str, Any], *, user: str) -> dict[str, Any]:
        cid = len(self.sent) + 1
        self.sent.append({"id": cid, "node": node, "command": command, "args": args, "user": user})
        self.stage[cid] = "SENT"
        return {"id": cid, "stage": "SENT"}

    def command(self, cid: int) -> dict[str, Any] | None:
        return {"id": cid, "stage": self.stage[cid], "reason": ""} if cid in self.stage else None


@pytest.fixture
def setup(tmp_path):
    a = open_archive(f"sqlite:///{tmp_path}/a.db")
    a.gap_settle_s = 1.0
    f = Fake()
    dropped = {"n01": 0}
    r = Refiller("moon", submit=f.submit, command=f.command, reachable=lambda n: f.state == "ONLINE",
                 state=lambda n: f.state, owlt=lambda n: 1.0, journal_bytes=lambda n: 4000,
                 node_dropped=dropped.get, backoff_s=5.0)
    r.archive = a
    yield a, f, r, dropped
    a.close()


def store(a, seqs: list[int], node: str = "n01") -> None:
    payload = b"".join(hk(s, unix_to_ticks(T0 + s)) for s in seqs)
    with a.transaction() as tx:
        tx.append_packets("moon", node, Parser().parse(payload), payload, time.time())


async def test_requests_waits_judges_and_fills(setup) -> None:
    a, f, r, _ = setup
    store(a, list(range(10)) + list(range(15, 20)))  # 10..14 missing
    t = time.time()
    await r.tick(t)
    assert f.sent == []  # not before settle (1 s) + the round trip (2 x 1 s)
    f.state = "ASLEEP"
    await r.tick(t + 5)
    assert f.sent == [] and r.nodes["n01"].waiting == "node ASLEEP"
    f.state = "ONLINE"
    r.link_up = lambda: False
    await r.tick(t + 5)
    assert f.sent == [] and r.nodes["n01"].waiting == "command link down"
    r.link_up = lambda: True
    await r.tick(t + 5)
    assert [(s["command"], s["args"], s["user"]) for s in f.sent] == \
        [("REPLAY", {"apid": 1, "from_seq": 10, "count": 5}, REFILL_USER)]
    (g,) = a.gaps(site="moon")
    assert (g["state"], g["requests"]) == ("refilling", 1)
    await r.tick(t + 6)
    assert len(f.sent) == 1  # one in flight per node
    f.stage[1] = "EXECUTED"
    store(a, [10, 11])  # part of it comes back
    await r.tick(t + 6)
    await r.tick(t + 9.5)  # judged 3 s after the ack: progress, so the rest is asked at once
    await r.tick(t + 12)
    assert f.sent[-1]["args"] == {"apid": 1, "from_seq": 12, "count": 3}
    f.stage[2] = "EXECUTED"
    store(a, [12, 13, 14])
    await r.tick(t + 13)
    assert a.gaps(site="moon")[0]["state"] == "filled" and r.filled == 1


async def test_fruitless_replays_back_off_then_lost_with_the_node_count(setup) -> None:
    a, f, r, dropped = setup
    store(a, [0, 1, 5, 6])
    dropped["n01"] = 42
    t = time.time() + 10
    times = []
    now = t
    while r.lost == 0 and now < t + 200:
        n = len(f.sent)
        await r.tick(now)
        if len(f.sent) > n:
            times.append(now)
            f.stage[len(f.sent)] = "EXECUTED"  # accepted, but nothing comes back
        now += 0.5
    assert len(f.sent) == 3 and r.lost == 1
    assert times[1] - times[0] >= 3 + 5 and times[2] - times[1] >= 3 + 10  # quiet time + doubling back-off
    (g,) = a.gaps(site="moon")
    assert (g["state"], g["node_dropped"], g["missing"]) == ("lost", 42, 3)
    assert "not in the node's journal" in g["reason"]


async def test_beyond_the_journal_window_is_lost_without_asking(setup) -> None:
    a, f, r, _ = setup
    store(a, [0, 1] + list(range(3, 200)))  # ~9 KB after the gap; the journal holds 4000 B
    await r.tick(time.time() + 10)
    assert f.sent == []
    (g,) = a.gaps(site="moon")
    assert g["state"] == "lost" and "beyond the journal window" in g["reason"]


async def test_rate_limit_across_nodes(setup) -> None:
    a, f, r, _ = setup
    r.max_per_minute = 2
    for n in ("n01", "n02", "n03"):
        store(a, [0, 2], node=n)
    await r.tick(time.time() + 10)
    assert len(f.sent) == 2 and {s["node"] for s in f.sent} == {"n01", "n02"}
    assert r.nodes["n03"].waiting.startswith("rate limit")

"""The time keeper's automatic syncs against what a node says of its own clock (unit level)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ground.ops.liveness import ONLINE, STALE, NodeTracker
from ground.ops.timekeeper import TimeKeeper
from ground.testing import make_packet, parse_packets
from wire import defs


class Node:
    """Feeds one node's packets to a TimeKeeper and a NodeTracker, as Operations does."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.now = 1_900_000_000.0
        self.tk = TimeKeeper(0.0, submit=self.submit, clock=lambda: self.now)
        self.live = NodeTracker("s", {"n01": 1.0})
        self.tk.reachable = self.live.reachable

    async def submit(self, node: str) -> dict[str, Any]:
        self.submitted.append(node)
        return {"id": len(self.submitted), "stage": "QUEUED"}

    def packets(self, *pk: bytes) -> None:
        res, _ = parse_packets(*pk)
        self.tk.on_packets("n01", res, np.ones(res.count, dtype=bool), self.now)
        self.live.on_packets("n01", int(res.ticks.max()), self.now)

    def hk(self, flags: int, boot: int = 3) -> bytes:
        return make_packet("HK", node="n01", boot_count=boot, flags=flags, hk_period=1, t=self.now)

    async def sync_round(self) -> bool:
        """One second: the tick; a queued sync is answered ACCEPTED + EXECUTED (no TIME_SYNC event)."""
        self.now += 1.0
        self.live.tick(self.now)
        cid = await self.tk.maybe_sync("n01", self.now)
        if cid is None:
            return False
        self.tk.on_sent({"id": cid, "node": "n01", "command": "TIME_SYNC", "user": "timekeeper"}, 100 + cid, self.now)
        self.packets(*(make_packet("ACK", node="n01", tc_counter=100 + cid, opcode=5, stage=s, t=self.now)
                       for s in (defs.ACK_STAGE_ACCEPTED, defs.ACK_STAGE_EXECUTED)))
        return True


async def test_a_node_whose_hk_says_synced_is_not_resynced_forever() -> None:
    """A BOOT event says unsynced; the node's HK after it says synced and no TIME_SYNC event
    comes (a node that keeps its own time).  The ground used to re-sync it every round trip
    forever, and the ACKs of its own syncs kept the node ONLINE after its telemetry stopped."""
    n = Node()
    n.packets(make_packet("EVENT", node="n01", code=defs.EVENT_BOOT, severity=0, text="booted", arg0=3, t=n.now))
    assert n.tk.get("n01").synced is False
    assert await n.sync_round()  # unsynced after a boot: synced once
    n.packets(n.hk(defs.HK_FLAG_SYNCED))  # ... and the node's HK says its clock is right
    assert n.tk.get("n01").synced is True
    # its telemetry stops: no more syncs, so nothing answers, so it turns STALE
    rounds = [await n.sync_round() for _ in range(8)]
    assert not any(rounds), rounds
    assert n.live.get("n01").state == STALE


async def test_an_old_hk_of_the_previous_boot_does_not_end_the_unsynced_period() -> None:
    n = Node()
    n.packets(make_packet("EVENT", node="n01", code=defs.EVENT_BOOT, severity=0, text="booted", arg0=4, t=n.now))
    n.packets(n.hk(defs.HK_FLAG_SYNCED, boot=3))  # late, from before the reboot
    assert n.tk.get("n01").synced is False
    n.packets(n.hk(0, boot=4))  # this boot: unsynced
    assert n.tk.get("n01").synced is False
    assert await n.sync_round()
    assert n.live.get("n01").state == ONLINE

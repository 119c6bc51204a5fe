"""Automatic refill: the ground asks a node to REPLAY the sequence gaps its journal still holds.

Gaps are accounted in the archive by every ingest worker (ground/archive/_gaps.py); this
runs once, in the ops layer, every tick:

* **What**: the node's oldest gap that is ``open`` (or ``refilling`` after a request that
  made progress) and older than the archive's settle time plus the round-trip light time
  (packets a node re-sends by itself after a reconnect arrive within that).
* **How**: the existing REPLAY telecommand (apid, from_seq, count), signed and verified
  like any command, sent as ``lunabase-ground (automatic refill)`` and visible in the
  command history.  A gap partly filled asks for the span of its counts still missing.
* **Rate**: one REPLAY in flight per node (a node serves one at a time), at least
  ``min_interval_s`` between two to one node, at most ``max_per_minute`` in all.
* **Light time**: a request is judged ``quiet_s`` after its EXECUTED ack (the replayed
  packets travel with and right after it); command timeouts already include the round trip.
* **Back-off**: nothing is sent while the node is not ONLINE (ASLEEP, STALE, LOST) or the
  command link is down; a request that times out or that brings no missing packet backs
  off (``backoff_s`` doubling up to ``backoff_max_s``).
* **Lost**: a gap whose packets are older than the node's journal can hold (the node
  announces ``journal_bytes`` in its status; the archive says how many bytes it produced
  since) is ``lost`` without asking; so is one ``max_attempts`` REPLAYs in a row did not
  fill at all.  A lost gap keeps the node's own journal drop count (HK ``journal_dropped``)
  at that moment.  Packets of a lost gap that still arrive are counted (it can end filled).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ground.archive._gaps import LOST, OPEN, REFILLING, SEQ_MOD

log = logging.getLogger("ground.refill")

REFILL_USER = "lunabase-ground (automatic refill)"  # the command history's name for the refiller
MAX_REPLAY = 4096  # the REPLAY command's largest count (wire/dictionary.toml)
_FINAL = ("EXECUTED", "REJECTED", "FAILED", "TIMED_OUT", "EXPIRED", "CANCELLED", "DENIED")


@dataclass
class NodeRefill:
    """The refiller's state for one node."""

    cid: int | None = None  # the REPLAY in flight
    gap: int | None = None  # the gap it asks for
    missing_before: int = 0
    done_at: float | None = None  # when the REPLAY reached a final stage
    next_at: float = 0.0  # no request before this (rate limit, back-off)
    failures: int = 0  # requests in a row that brought nothing
    waiting: str = ""  # why nothing is sent now

    def view(self) -> dict[str, Any]:
        return {"in_flight": self.cid, "gap": self.gap, "next_at": self.next_at or None, "failures": self.failures,
                "waiting": self.waiting}


class Refiller:
    """Requests missing sequence ranges with REPLAY; see the module docstring."""

    def __init__(
        self,
        site: str,
        *,
        submit: Callable[..., Awaitable[dict[str, Any]]],
        command: Callable[[int], dict[str, Any] | None],
        reachable: Callable[[str], bool],
        state: Callable[[str], str],
        owlt: Callable[[str], float],
        journal_bytes: Callable[[str], int | None],
        node_dropped: Callable[[str], int | None],
        event: Callable[..., Any] | None = None,
        min_interval_s: float = 2.0,
        quiet_s: float = 3.0,
        max_attempts: int = 3,
        backoff_s: float = 5.0,
        backoff_max_s: float = 300.0,
        max_per_minute: int = 30,
    ) -> None:
        self.site = site
        self.submit = submit
        self.command = command
        self.reachable = reachable
        self.state = state
        self.owlt = owlt
        self.journal_bytes = journal_bytes
        self.node_dropped = node_dropped
        self.event = event
        self.min_interval_s = min_interval_s
        self.quiet_s = quiet_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_per_minute = max_per_minute
        #: the archive holding the gap accounting (None: the refiller is idle); set by the service
        self.archive: Any = None
        #: whether the ground's command link is up (set by the service)
        self.link_up: Callable[[], bool] = lambda: True
        self.enabled = True
        self.nodes: dict[str, NodeRefill] = {}
        self.sent: collections.deque[float] = collections.deque()
        self.requests = 0
        self.filled = 0
        self.lost = 0

    def view(self) -> dict[str, Any]:
        """The refiller's state for ``GET /api/gaps``."""
        return {"enabled": self.enabled and self.archive is not None, "requests": self.requests,
                "filled": self.filled, "lost": self.lost, "max_per_minute": self.max_per_minute,
                "nodes": {n: st.view() for n, st in sorted(self.nodes.items())}}

    def _node(self, node: str) -> NodeRefill:
        st = self.nodes.get(node)
        if st is None:
            st = self.nodes[node] = NodeRefill()
        return st

    async def tick(self, now: float) -> None:
        """Judge the REPLAYs in flight, then request the next gaps (once a second)."""
        a = self.archive
        if a is None or not self.enabled:
            return
        gaps = a.gaps(site=self.site, states=(OPEN, REFILLING), limit=2000, now_=now)
        by_id = {g["id"]: g for g in gaps}
        for node, st in self.nodes.items():
            if st.cid is not None:
                self._judge(node, st, by_id.get(st.gap or -1), now)
        while self.sent and now - self.sent[0] > 60.0:
            self.sent.popleft()
        by_node: dict[str, list[dict[str, Any]]] = {}
        for g in sorted(gaps, key=lambda g: g["id"]):
            by_node.setdefault(g["node"], []).append(g)
        for node, st in self.nodes.items():
            if node not in by_node and st.cid is None:
                st.waiting = ""
        for node, node_gaps in by_node.items():
            st = self._node(node)
            if st.cid is not None or now < st.next_at:
                continue
            if not self.link_up():
                st.waiting = "command link down"
                continue
            if not self.reachable(node):
                st.waiting = f"node {self.state(node)}"
                continue
            if len(self.sent) >= self.max_per_minute:
                st.waiting = f"rate limit ({self.max_per_minute} REPLAYs a minute)"
                continue
            st.waiting = ""
            rt = 2.0 * self.owlt(node)
            for g in node_gaps:
                if now - g["detected"] < a.gap_settle_s + rt:
                    continue  # the node may still re-send it by itself
                if await self._request(node, st, g, now):
                    break

    async def _request(self, node: str, st: NodeRefill, g: dict[str, Any], now: float) -> bool:
        """Ask for gap ``g``, or end it lost when the journal cannot hold it; True when a REPLAY left."""
        a = self.archive
        cap = self.journal_bytes(node)
        if cap:
            produced = a.bytes_since(self.site, node, g["t_hi"])
            if produced > cap:
                self._lost(g, f"beyond the journal window: {produced} B archived since, the node's journal holds"
                              f" at most {cap} B")
                return False
        first, count = g["first"], g["count"]
        if g["missing"] < g["count"]:
            have = a.gap_archived_seqs(g)
            left = [(first + k) % SEQ_MOD for k in range(count) if (first + k) % SEQ_MOD not in have]
            if not left:
                return False  # ingest fills it in the next commit
            first, count = left[0], (left[-1] - left[0]) % SEQ_MOD + 1
        count = min(count, MAX_REPLAY)
        args = {"apid": g["apid"], "from_seq": first, "count": count}
        try:
            row = await self.submit(node, "REPLAY", args, user=REFILL_USER)
        except Exception as e:
            st.waiting = f"REPLAY refused: {e}"[:200]
            st.next_at = now + self.backoff_max_s
            log.warning("%s: automatic REPLAY refused: %s", node, e)
            return False
        self.sent.append(now)
        self.requests += 1
        st.cid, st.gap, st.missing_before, st.done_at = int(row["id"]), g["id"], g["missing"], None
        a.update_gap(g["id"], state=REFILLING, request=now,
                     reason=f"REPLAY #{row['id']} of seq {first}+{count} (request {g['requests'] + 1})")
        log.info("%s APID %d: %d packet(s) missing from seq %d: REPLAY #%s seq %d+%d", node, g["apid"],
                 g["missing"], g["first"], row["id"], first, count)
        return True

    def _judge(self, node: str, st: NodeRefill, g: dict[str, Any] | None, now: float) -> None:
        """Follow the REPLAY in flight: its command's outcome, then what it brought."""
        row = self.command(st.cid) if st.cid is not None else None
        stage = row["stage"] if row else "FAILED"
        if stage not in _FINAL:
            return
        if st.done_at is None:
            st.done_at = now
        if g is None:  # filled (or ended lost) meanwhile
            self.filled += 1
            self._done(st, now, progress=True)
            return
        if stage != "EXECUTED":
            # not delivered in time (asleep, link down) or refused: back off; only a refusal
            # by the node counts as an attempt
            counted = stage in ("REJECTED", "FAILED")
            reason = (row or {}).get("reason") or ""
            self.archive.update_gap(g["id"], state=OPEN, reason=f"REPLAY #{st.cid} {stage}"
                                    + (f": {reason}" if reason else ""))
            self._done(st, now, progress=False, counted=counted, g=g)
            return
        if now < st.done_at + self.quiet_s:
            return
        self._done(st, now, progress=g["missing"] < st.missing_before, g=g)

    def _done(self, st: NodeRefill, now: float, *, progress: bool, counted: bool = True,
              g: dict[str, Any] | None = None) -> None:
        st.cid = None
        if progress:
            st.failures = 0
            st.next_at = now + self.min_interval_s
            return
        if counted:
            st.failures += 1
        if g is not None and st.failures >= self.max_attempts:
            self._lost(g, f"{st.failures} REPLAYs in a row brought none of its packets: not in the node's journal")
            st.failures = 0
            st.next_at = now + self.min_interval_s
            return
        st.next_at = now + min(self.backoff_max_s, self.backoff_s * 2 ** max(0, st.failures - 1))

    def _lost(self, g: dict[str, Any], why: str) -> None:
        dropped = self.node_dropped(g["node"])
        self.archive.update_gap(g["id"], state=LOST, node_dropped=dropped, reason=why)
        self.lost += 1
        msg = (f"{g['node']} APID {g['apid']}: {g['missing']} packet(s) from seq {g['first']} lost for good ({why};"
               f" the node's journal dropped {dropped if dropped is not None else '?'} in all)")
        log.warning("%s", msg)
        if self.event is not None:
            self.event("link", msg, site=self.site, node=g["node"], severity="WARNING",
                       data={"gap": g["id"], "apid": g["apid"], "first": g["first"], "missing": g["missing"],
                             "node_dropped": dropped})

"""Node time the ground can trust: automatic TIME_SYNC, measured light time, correlation.

The model (docs/ground-ops.md "Node time"):

- **Measured.** The round trip of the ground's own TIME_SYNC exchanges: publish of the
  TC (``t_tx``) to reception of its ACCEPTED ack.  The one-way light time (OWLT) is half
  of it (the smallest of the last 7: the exchange that queued least); until one is
  measured the configured light time is used.  Per live packet, ``received - OWLT - node time``: its minimum over a window
  (the packet that queued least, as NTP's clock filter does) is the node's clock
  **offset**; the node's own drift estimate comes with every HK (``clock_drift``).
- **Assumed.** A symmetric path (uplink = downlink), node handling in well under a
  millisecond, the ground host's clock right (NTP); a packet's fastest trip is close to
  the light time.
- **Error bound.** After a sync the node is off by the OWLT error plus the release latency
  (what the ground spends between stamping the value and the byte leaving): measured as
  the offset of the EXECUTED ack and of later live packets (``residual_s``, ``offset_s``).
  A sync whose residual exceeds ``tolerance_s`` (10 ms) is followed by another one with
  the refined OWLT (at most ``max_refine``, 5, per boot); the periodic sync (``period_s``) and
  the node's slew keep drift inside ``bound_s`` (50 ms), and an offset beyond it re-syncs.

Automatic syncs: when a node's birth/status or HK says its clock is unsynced (a boot),
when the residual is too large, every ``period_s``, and only while the node is reachable
(the commander holds it otherwise).  One sync in flight per node.

Packets stamped before the first sync of a boot get a **correction range**
(``ground.archive.TimeCorrection``): node times [first unsynced tag, step) are corrected
by the ground's offset estimate while the sync is pending (quality "estimated"), then by
the step the node reports in its TIME_SYNC event (quality "corrected"): exact in ms, or
for a step beyond an i32 of ms (a clock at 2000-01-01) the difference between the
event's tag and the sync's ACCEPTED ack, stamped by the old clock just before the step.  A
refinement that steps by more than ``bound_s`` within ``REFINE_SPAN_S`` of the previous
sync corrects the tags in between the same way.  Time tags
in the archive are never rewritten; queries apply the ranges.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ground.archive import CORRECTED, ESTIMATED, TimeCorrection
from ground.ingest import RETAINED
from ground.parse import ParseResult
from wire import defs
from wire.ccsds import FINE_PER_S
from wire.timetag import ticks_to_unix

log = logging.getLogger("ground.time")

I32_MAX_MS = 0x7FFFFFFF  # the node clamps the step it reports in EVENT arg0 to an i32 of ms
USER = "timekeeper"  # the account the automatic syncs are submitted as (command history)
_OPEN = ("QUEUED", "HELD", "SENT", "ACCEPTED")
#: a step beyond the bound within this long after the previous one (a refinement) corrects
#: the time tags in between; later steps are drift, which the slew keeps inside the bound
REFINE_SPAN_S = 120


def node_unix(ticks: int | np.ndarray) -> Any:
    """Time-tag ticks -> Unix s (``wire.timetag.ticks_to_unix``)."""
    return ticks_to_unix(ticks)


@dataclass
class NodeTime:
    """The ground's view of one node's clock; ``view()`` is the API's shape."""

    node: str
    synced: bool | None = None  # the node's own word: status "synced", HK flag, TIME_SYNC event
    boot: int | None = None
    owlt: float | None = None  # measured one-way light time (s)
    rtts: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=7))
    samples: collections.deque[tuple[float, float]] = field(default_factory=lambda: collections.deque(maxlen=256))
    offset: float | None = None  # ground - node (s): min-filtered over live packets
    drift_ppm: float | None = None  # the node's estimate (HK clock_drift)
    syncs: int = 0  # EXECUTED syncs since the ground started
    boot_syncs: int = 0  # sync attempts this boot (refinements are bounded)
    last_sync: float | None = None  # ground time of the last EXECUTED sync
    last_step_s: float | None = None  # the node's step at the last sync
    residual: float | None = None  # offset measured by the EXECUTED ack of the last sync
    pending: int | None = None  # command id of the sync in flight
    pending_counter: int | None = None
    t_tx: float | None = None  # when the pending sync left the ground
    last_request: float = 0.0
    refine: bool = False  # the last sync missed by more than the tolerance
    range_lo: int | None = None  # first unsynced time tag of this boot (ticks)
    range_hi: int | None = None  # newest unsynced time tag seen (ticks)
    range_written: tuple[int, int, int] | None = None  # (lo, hi, corr) last written as ESTIMATED
    corrected: int = 0  # correction ranges closed with the node's exact step
    last_step_at: int | None = None  # node time (ticks) just after the last step
    ranges: list[TimeCorrection] = field(default_factory=list)  # written this boot (refinements compose)
    accepted_at: int | None = None  # node time tag of the pending sync's ACCEPTED ack

    def quality(self, tolerance: float) -> str:
        if self.synced is None:
            return "unknown"
        if not self.synced:
            return "unsynced"
        if self.offset is not None and abs(self.offset) > tolerance:
            return "drifting"
        return "synced"

    def view(self, tolerance: float) -> dict[str, Any]:
        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {"synced": self.synced, "quality": self.quality(tolerance), "offset_s": r(self.offset),
                "drift_ppm": r(self.drift_ppm, 2), "owlt_s": r(self.owlt), "rtt_s": r(self.rtts[-1] if self.rtts else None),
                "syncs": self.syncs, "last_sync": self.last_sync, "last_step_s": r(self.last_step_s, 3),
                "residual_s": r(self.residual), "pending": self.pending, "boot": self.boot}


class TimeKeeper:
    """Keeps every node's clock synced and correlated; fed by Operations, ticked each second.

    ``submit(node)`` queues a TIME_SYNC (the commander fills it at release with ground time
    + ``owlt(node)``) and returns the command id; ``correct(node, TimeCorrection)`` stores
    a correction range (the archive).  ``reachable(node)`` says whether to sync now.
    """

    def __init__(
        self,
        light_time: float,
        *,
        period_s: float = 600.0,
        tolerance_s: float = 0.010,
        bound_s: float = 0.050,
        max_refine: int = 5,
        window_s: float = 60.0,
        submit: Callable[[str], Any] | None = None,
        correct: Callable[[str, TimeCorrection], None] | None = None,
        reachable: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.light_time = light_time
        self.period_s = period_s
        self.tolerance_s = tolerance_s  # a sync whose residual exceeds it is refined
        self.bound_s = bound_s  # the stated error bound: beyond it the quality is "drifting"
        self.max_refine = max_refine
        self.window_s = window_s
        self.submit = submit
        self.correct = correct
        self.reachable = reachable or (lambda node: True)
        self.clock = clock
        self.nodes: dict[str, NodeTime] = {}
        self.enabled = period_s >= 0
        self.active: Callable[[], bool] = lambda: True  # false on a follower ground: it only watches

    def get(self, node: str) -> NodeTime:
        nt = self.nodes.get(node)
        if nt is None:
            nt = self.nodes[node] = NodeTime(node)
        return nt

    def owlt(self, node: str) -> float:
        """The one-way light time to use for ``node``: measured, else the configured one."""
        nt = self.nodes.get(node)
        return nt.owlt if nt is not None and nt.owlt is not None else self.light_time

    def view(self, node: str) -> dict[str, Any]:
        return self.get(node).view(self.bound_s)

    # -- inputs (from Operations, after the archive commit) ---------------------------------

    def on_status(self, node: str, status: dict[str, Any], received: float) -> None:
        nt = self.get(node)
        if status.get(RETAINED) and nt.synced is not None:
            return  # a birth the broker replayed to our new subscription: old news about the clock
        boot = status.get("boot")
        if isinstance(boot, int) and boot != nt.boot:
            nt.boot = boot
            nt.boot_syncs = 0
        if status.get("state") == "online" and "synced" in status:
            synced = bool(status["synced"])
            if not synced and nt.synced is not False:
                self._unsynced(nt)
            nt.synced = synced
            if not synced:
                self._request_soon(node)

    def on_sent(self, row: dict[str, Any], counter: int, t_tx: float) -> None:
        """The commander released a command: ours when it is a TIME_SYNC from ``USER``."""
        if row.get("command") != "TIME_SYNC" or row.get("user") != USER:
            return
        nt = self.get(row["node"])
        nt.pending = int(row["id"])
        nt.pending_counter, nt.t_tx = counter, t_tx

    def on_command(self, row: dict[str, Any]) -> None:
        """A command row changed: clear the pending sync once it is final."""
        nt = self.nodes.get(row.get("node", ""))
        if nt is None or nt.pending != row.get("id"):
            return
        if row.get("stage") in ("REJECTED", "FAILED", "TIMED_OUT", "EXPIRED", "CANCELLED"):
            log.warning("%s: time sync #%s %s (%s)", nt.node, row["id"], row["stage"], row.get("reason", ""))
            nt.pending = nt.pending_counter = nt.t_tx = None

    def on_packets(self, node: str, result: ParseResult, fresh: np.ndarray, received: float) -> None:
        nt = self.get(node)
        tables = result.tables
        # the sync's ACKs first: the ACCEPTED one carries the old clock's time (see _synced)
        ack = tables.get(defs.APID_ACK)
        if ack is not None and nt.pending_counter is not None:
            cols = ack.columns
            for k in range(len(ack)):
                r = int(ack.rows[k])
                if int(ack.values[k, cols.index("tc_counter")]) != nt.pending_counter:
                    continue
                stage = int(ack.values[k, cols.index("stage")])
                if stage == defs.ACK_STAGE_ACCEPTED:
                    nt.accepted_at = int(result.ticks[r])  # node time just before the step
                if stage == defs.ACK_STAGE_ACCEPTED and nt.t_tx is not None:
                    rtt = received - nt.t_tx
                    if 0 < rtt < 600:
                        nt.rtts.append(rtt)
                        nt.owlt = min(nt.rtts) / 2  # the exchange that queued least
                elif stage == defs.ACK_STAGE_EXECUTED:
                    self._executed(nt, int(result.ticks[r]), received)
        after = 0  # packets of this result after a step were stamped by the new clock
        ev = tables.get(defs.APID_EVENT)
        if ev is not None:
            cols = ev.columns
            for k in range(len(ev)):
                r = int(ev.rows[k])
                if not fresh[r]:
                    continue
                code = int(ev.values[k, cols.index("code")])
                if code == defs.EVENT_BOOT:
                    nt.boot = int(ev.values[k, cols.index("arg0")])
                    nt.boot_syncs = 0
                    nt.synced = False
                    self._unsynced(nt)
                    nt.range_lo = int(result.ticks[r])
                    after = r  # the previous boot's packets measured another clock
                    self._request_soon(node)
                elif code == defs.EVENT_TIME_SYNC:
                    self._synced(nt, int(result.ticks[r]), int(ev.values[k, cols.index("arg0")]))
                    after = r + 1
        hk = tables.get(defs.APID_HK)
        if hk is not None and len(hk):
            cols = hk.columns
            last = hk.values[-1]
            flag = int(last[cols.index("flags")]) & defs.HK_FLAG_SYNCED
            nt.drift_ppm = float(last[cols.index("clock_drift")])
            if not flag and nt.synced:
                # synced per our books, unsynced per the node: it restarted (status lost?)
                nt.synced = False
                self._unsynced(nt)
                self._request_soon(node)
            elif flag and nt.synced is None:
                nt.synced = True
            elif (flag and nt.synced is False and nt.pending is None and int(hk.rows[-1]) >= after
                  and (nt.boot is None or int(last[cols.index("boot_count")]) == nt.boot)):
                # unsynced per our books (a BOOT event), synced per an HK of that boot sent after
                # it (not a late one of the previous boot): the node's word wins.  Without this,
                # a node that set its clock without reporting a TIME_SYNC event was re-synced
                # every round trip forever, and the ACKs of those syncs counted as contact, so a
                # node whose telemetry stopped never went STALE
                log.info("%s: its HK says its clock is synced (no TIME_SYNC event seen): no more syncs", node)
                nt.synced = True
                nt.range_lo = nt.range_hi = None
                nt.range_written = None
        # the clock filter: live packets' (received - OWLT - node time), minimum over a window
        m = fresh.copy()
        m[:after] = False
        ticks = result.ticks[m]
        if not len(ticks):
            return
        owlt = self.owlt(node)
        if nt.synced is False:
            lo = int(ticks.min())
            hi = int(ticks.max())
            nt.range_lo = lo if nt.range_lo is None else min(nt.range_lo, lo)
            nt.range_hi = hi if nt.range_hi is None else max(nt.range_hi, hi)
        d = float(np.max(node_unix(ticks)))  # the newest packet queued least
        nt.samples.append((received, received - owlt - d))
        self._filter(nt, received)

    # -- internals --------------------------------------------------------------------------

    def _filter(self, nt: NodeTime, now: float) -> None:
        while nt.samples and nt.samples[0][0] < now - self.window_s:
            nt.samples.popleft()
        if nt.samples:
            nt.offset = min(s for _t, s in nt.samples)

    def _unsynced(self, nt: NodeTime) -> None:
        # a new unsynced period: its packets are corrected by a new range; the old
        # samples measured another clock
        nt.samples.clear()
        nt.offset = None
        nt.range_lo = nt.range_hi = None
        nt.range_written = None

    def _request_soon(self, node: str) -> None:
        try:
            asyncio.get_running_loop().create_task(self.maybe_sync(node, self.clock()))
        except RuntimeError:
            pass  # no loop (a unit test): the next tick does it

    def _synced(self, nt: NodeTime, ev_ticks: int, off_ms: int) -> None:
        """The node's TIME_SYNC event (stamped right after the step; arg0 = the step in ms)."""
        if abs(off_ms) < I32_MAX_MS:
            step = (off_ms * FINE_PER_S) // 1000
        elif nt.accepted_at is not None:
            # the step overflowed an i32 of ms (a clock at 2000-01-01, 25+ years off): the
            # sync's ACCEPTED ack was stamped by the old clock a moment before the step
            # (the node's journal write of that ack: ~1 ms; under load more)
            step = ev_ticks - nt.accepted_at
        else:
            log.warning("%s: clock stepped by more than 24.8 days and its ACCEPTED ack is unknown:"
                        " earlier time tags stay uncorrected", nt.node)
            nt.synced = True
            return
        nt.last_step_s = step / FINE_PER_S
        hi = min(ev_ticks - step, ev_ticks)  # a backward step: tags after it are ambiguous, kept
        if abs(off_ms) >= I32_MAX_MS:
            hi += 1  # the range is [lo, hi): the ACCEPTED ack stamped at hi is pre-step too
        lo = None
        if nt.synced is False and nt.range_lo is not None:
            lo = nt.range_lo  # the first sync of a boot: everything stamped before it
        elif nt.synced and nt.last_step_at is not None and abs(step) > self.bound_s * FINE_PER_S \
                and ev_ticks - nt.last_step_at < REFINE_SPAN_S * FINE_PER_S:
            lo = nt.last_step_at  # a refinement shortly after a sync: the tags in between
        if lo is not None and hi > lo:
            now = self.clock()
            if nt.synced:
                # a refinement: what the earlier ranges of this boot corrected to was off by
                # this step too (they were corrected to the clock being refined)
                nt.ranges = [TimeCorrection(r.lo, r.hi, r.corr + step, CORRECTED, r.boot, now) for r in nt.ranges]
                for r in nt.ranges:
                    self._write(nt.node, r)
            else:
                nt.ranges = []
            c = TimeCorrection(lo, hi, step, CORRECTED, nt.boot or 0, now)
            nt.ranges.append(c)
            self._write(nt.node, c)
            nt.corrected += 1
        nt.last_step_at = ev_ticks
        nt.synced = True
        nt.samples.clear()  # the clock changed under the filter
        nt.offset = None
        nt.range_lo = nt.range_hi = None
        nt.range_written = None

    def _executed(self, nt: NodeTime, ack_ticks: int, received: float) -> None:
        nt.syncs += 1
        nt.last_sync = received
        nt.residual = received - self.owlt(nt.node) - float(node_unix(ack_ticks))
        nt.refine = abs(nt.residual) > self.tolerance_s and nt.boot_syncs < self.max_refine
        log.info("%s: clock synced (step %s s, OWLT %.4f s, residual %+.4f s%s)", nt.node,
                 "?" if nt.last_step_s is None else f"{nt.last_step_s:+.3f}", self.owlt(nt.node), nt.residual,
                 ", refining" if nt.refine else "")
        nt.pending = nt.pending_counter = nt.t_tx = None

    def _write(self, node: str, c: TimeCorrection) -> None:
        if self.correct is None or not self.active():
            return
        try:
            self.correct(node, c)
        except Exception:  # the archive failing must not stop syncing
            log.exception("%s: storing a time correction failed", node)

    async def maybe_sync(self, node: str, now: float) -> int | None:
        """Queue a TIME_SYNC for ``node`` if one is due; returns its command id."""
        if not self.enabled or self.submit is None or not self.active():
            return None
        nt = self.get(node)
        if nt.pending is not None or not self.reachable(node):
            return None
        if now - nt.last_request < max(2.0, 2 * self.owlt(node) + 1.0):
            return None  # rate limit: at most one per round trip
        if nt.synced is False or nt.refine:
            why = "unsynced" if nt.synced is False else "refine"
        elif nt.synced and self.period_s > 0 and (nt.last_sync is None or now - nt.last_sync >= self.period_s):
            why = "periodic"
        elif nt.synced and nt.offset is not None and abs(nt.offset) > self.bound_s and len(nt.samples) >= 5:
            why = "offset"
        else:
            return None
        nt.last_request = now
        nt.refine = False
        nt.boot_syncs += 1
        row = await self.submit(node)
        cid = int(row["id"]) if isinstance(row, dict) else int(row)
        if row.get("stage") in _OPEN if isinstance(row, dict) else True:
            nt.pending = cid
        log.info("%s: time sync #%d queued (%s; OWLT %.4f s%s)", node, cid, why, self.owlt(node),
                 " measured" if nt.owlt is not None else " configured")
        return cid

    async def tick(self, now: float | None = None) -> None:
        """Once a second: syncs that are due, the estimated correction of open ranges."""
        now = self.clock() if now is None else now
        for node, nt in list(self.nodes.items()):
            if nt.synced is False and nt.range_lo is not None and nt.offset is not None:
                corr = int(round(nt.offset * FINE_PER_S))
                key = (nt.range_lo, (nt.range_hi or nt.range_lo) + 1, corr)
                w = nt.range_written
                if w is None or w[:2] != key[:2] or abs(w[2] - corr) > FINE_PER_S // 1000:
                    nt.range_written = key
                    self._write(node, TimeCorrection(key[0], key[1], corr, ESTIMATED, nt.boot or 0, now))
            try:
                await self.maybe_sync(node, now)
            except Exception:
                log.exception("%s: queueing a time sync failed", node)


__all__ = ["NodeTime", "TimeKeeper"]

"""Node liveness that knows each node's sleep schedule.

States (see docs/ground-ops.md):

- ``UNKNOWN``: nothing heard since the ground started.
- ``ONLINE``: fresh packets, or an ``online`` status (a retained one replayed by the broker
  only while the node is UNKNOWN: it is no contact now).
- ``ASLEEP``: the node announced sleep (status ``asleep`` with ``next_contact``); it stays
  ASLEEP, not stale, until the announced contact plus ``grace``.
- ``STALE``: supposed to be online, but no packet for ``stale_factor`` × hk_period.
- ``LOST``: last will ``offline`` received, silent for ``lost_factor`` × hk_period, or it
  missed its announced contact by more than ``grace``.

Node ``next_contact`` is node time (s since 2000-01-01); it is mapped to ground time with
the offset between the node's latest packet time tag and its ground receive time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ground.ingest import RETAINED
from ground.ratelog import RateLimitedLog
from wire.timetag import node_to_unix, ticks_to_unix

UNKNOWN, ONLINE, ASLEEP, STALE, LOST = "UNKNOWN", "ONLINE", "ASLEEP", "STALE", "LOST"
_rlog = RateLimitedLog(logging.getLogger("ground.ops"), 10.0)


@dataclass
class NodeInfo:
    """What the ground knows about one node; ``as_dict`` is the API's view."""

    site: str
    node: str
    state: str = UNKNOWN
    since: float = 0.0  # ground time of the last state change
    reason: str = ""
    last_contact: float | None = None  # ground time of the last packet or status
    last_packet: float | None = None
    status: str | None = None  # last status message's state
    mode: str | None = None
    boot: int | None = None
    hk_period: float = 1.0
    clock_offset: float | None = None  # ground unix time − node time (s) at the last packet
    next_contact: float | None = None  # ground unix time of the announced next contact
    next_contact_hk: float | None = None  # from HK next_contact (seconds-until), ground time
    fw: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return d


class NodeTracker:
    """Tracks liveness of every node; ``tick(now)`` applies the time-based rules.

    ``listeners`` are called with (NodeInfo, old_state) on every state change.
    """

    def __init__(
        self,
        site: str,
        nodes: dict[str, float] | None = None,
        *,
        stale_factor: float = 3.0,
        lost_factor: float = 30.0,
        grace: float = 30.0,
        log: Callable[..., Any] | None = None,
    ) -> None:
        self.site = site
        self.stale_factor = stale_factor
        self.lost_factor = lost_factor
        self.grace = grace
        self.log = log  # OpsStore.event-like: log(kind, message, site=, node=, severity=, data=)
        self.nodes: dict[str, NodeInfo] = {}
        #: the node-time (s since the wire epoch) of each node's announced next contact, as sent
        self.announced: dict[str, float] = {}
        self.listeners: list[Callable[[NodeInfo, str], None]] = []
        for n, hk in (nodes or {}).items():
            self.nodes[n] = NodeInfo(site, n, hk_period=hk)

    def get(self, node: str) -> NodeInfo:
        info = self.nodes.get(node)
        if info is None:
            info = self.nodes[node] = NodeInfo(self.site, node)
        return info

    def _set(self, info: NodeInfo, state: str, reason: str, now: float) -> None:
        if info.state == state:
            info.reason = reason if state != ONLINE else info.reason
            return
        old = info.state
        info.state, info.reason, info.since = state, reason, now
        if self.log:
            sev = {LOST: "ERROR", STALE: "WARNING"}.get(state, "INFO")
            self.log("node_state", f"{info.node} {old} → {state}" + (f": {reason}" if reason else ""),
                     site=info.site, node=info.node, severity=sev,
                     data={"from": old, "to": state, "reason": reason}, t=now)
        for fn in list(self.listeners):
            fn(info, old)

    # -- inputs ------------------------------------------------------------------------

    def on_packets(self, node: str, last_ticks: int | None, received: float, hk: dict[str, float] | None = None) -> NodeInfo:
        """Fresh packets from ``node`` arrived at ``received``; ``last_ticks`` = newest time tag.

        ``hk`` = the latest HK engineering values by field name, if any came.
        """
        info = self.get(node)
        info.last_contact = info.last_packet = received
        if last_ticks is not None and last_ticks > 0:
            info.clock_offset = received - ticks_to_unix(last_ticks)
        if hk:
            if "hk_period" in hk and hk["hk_period"] > 0:
                info.hk_period = float(hk["hk_period"])
            if "boot_count" in hk:
                info.boot = int(hk["boot_count"])
            nc = hk.get("next_contact", 0.0)
            info.next_contact_hk = received + nc if nc > 0 else None
        self._set(info, ONLINE, "", received)
        return info

    def on_status(self, node: str, status: dict[str, Any], received: float) -> NodeInfo:
        """A status JSON from the node's status topic.

        A *retained* status the broker replays because the ground (re)subscribed (ingest
        marks it ``RETAINED``) was sent at some unknown time before: it is no contact now.
        It only tells a ground that knows nothing of the node yet (UNKNOWN, e.g. just
        started) what the node last said; otherwise the ground already heard it, or newer.
        """
        info = self.get(node)
        if status.get(RETAINED) and info.state != UNKNOWN:
            return info
        st = str(status.get("state", ""))
        info.status = st
        if status.get("mode") is not None:
            info.mode = str(status["mode"])
        if status.get("boot") is not None:
            info.boot = int(status["boot"])
        if status.get("hk_period"):
            info.hk_period = float(status["hk_period"])
        if status.get("fw"):
            info.fw = str(status["fw"])
        nc = float(status.get("next_contact") or 0)
        if st == "online":
            info.last_contact = received
            info.next_contact = None
            self._set(info, ONLINE, "birth (retained, sent before the ground connected)" if status.get(RETAINED)
                      else "birth", received)
        elif st == "asleep":
            offset = info.clock_offset if info.clock_offset is not None else 0.0
            info.next_contact = node_to_unix(nc) + offset if nc > 0 else None
            self.announced[node] = nc
            info.last_contact = received
            until = time.strftime("%H:%M:%S", time.gmtime(info.next_contact)) if info.next_contact else "further notice"
            self._set(info, ASLEEP, f"announced sleep until {until}", received)
        elif st == "offline":
            self._set(info, LOST, "last will: connection lost without a clean disconnect", received)
        self.tick(received, only=node)
        return info

    def tick(self, now: float | None = None, only: str | None = None) -> None:
        """Apply the time rules (stale, lost, missed contact) at ``now``."""
        now = time.time() if now is None else now
        for info in [self.nodes[only]] if only else list(self.nodes.values()):
            try:
                self._tick_one(info, now)
            except Exception:  # one node's bad state must not stop the others' rules
                _rlog.error(info.node, "liveness of %s failed", info.node, exc_info=True)

    def _tick_one(self, info: NodeInfo, now: float) -> None:
        if info.state == ASLEEP:
            if info.next_contact is not None and now > info.next_contact + self.grace:
                self._set(info, LOST, f"missed announced contact by {now - info.next_contact:.0f} s", now)
        elif info.state in (ONLINE, STALE) and info.last_contact is not None:
            silent = now - info.last_contact
            # a node on a duty cycle (HK next_contact > 0) may be silent until then
            expected = info.next_contact_hk + self.grace if info.next_contact_hk else 0.0
            if silent > self.lost_factor * info.hk_period and now > expected:
                self._set(info, LOST, f"silent for {silent:.0f} s", now)
            elif silent > self.stale_factor * info.hk_period and now > expected:
                self._set(info, STALE, f"no packet for {silent:.1f} s (hk period {info.hk_period:g} s)", now)

    def reachable(self, node: str) -> bool:
        """True when a command sent now should reach the node (it is ONLINE)."""
        return self.get(node).state == ONLINE

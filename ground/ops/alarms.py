"""Alarms per (node, parameter) with a Yamcs-like lifecycle, and the operator event log.

Lifecycle of one alarm (see docs/ground-ops.md)::

    raised ──ack──> acknowledged ──value back in limits──> cleared
      │  value back in limits: stays raised, ``returned`` = True, until acknowledged
      └─ escalation yellow→red re-raises an acknowledged alarm (needs a new ack)

Shelving hides an open alarm from the active list until a time (or ``unshelve``); its
condition is still tracked and it still clears.  A new violation after ``cleared`` opens
a new alarm (new id).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ground.errors import AlarmError
from ground.ops.limits import LEVEL_NAMES, OK, PENDING, PacketLimits, condition, limits_for
from ground.ops.store import OpsStore, Row
from ground.parse import Table
from wire.dictionary import Dictionary, load

log = logging.getLogger("ground.ops")

#: the longest an alarm can be shelved (a week); beyond that, acknowledge it or fix the limit
MAX_SHELVE_MIN = 7 * 24 * 60


def _view(a: Row, now: float) -> Row:
    """An alarm row as clients see it: the stored row plus ``shelved`` (shelving not expired)."""
    return dict(a, shelved=bool(a["shelved_until"] and a["shelved_until"] > now))


@dataclass
class _Track:
    viol: int = 0  # consecutive violating samples so far
    red: int = 0  # consecutive red samples so far
    cond: int = OK  # current alarm condition
    level: int = OK  # raw limit level of the latest sample


class AlarmManager:
    """Checks tables against limits, keeps alarm state in the ops store, logs transitions.

    ``listeners`` get every alarm row after it changes (the API pushes them).
    """

    def __init__(self, store: OpsStore, dictionary: Dictionary | None = None) -> None:
        self.store = store
        self.dictionary = dictionary or load()
        self.limits: dict[int, PacketLimits] = limits_for(self.dictionary)
        self._tracks: dict[tuple[str, str, int, int], _Track] = {}
        self._open: dict[tuple[str, str, str, str], Row] = {}
        self.listeners: list[Callable[[Row], None]] = []
        #: raises (ground.ops.leader.NotLeader) when this ground may not act: a follower
        self.guard: Callable[[str], None] = lambda what: None
        for a in store.alarms(open_only=True):  # resume open alarms after a restart
            _sane(a)
            self._open[(a["site"], a["node"], a["packet"], a["field"])] = a

    # -- checking ----------------------------------------------------------------------

    def check(self, site: str, node: str, table: Table, times: np.ndarray | None = None) -> np.ndarray | None:
        """Run one Table (one APID, one node) through the limits.

        ``times`` (unix s per row, optional) date the transitions; returns the raw level
        matrix (n, limited fields) or None when the packet has no limits.
        """
        pl = self.limits.get(table.apid)
        if pl is None or len(table) == 0:
            return None
        lv = pl.levels(table.values)
        active: np.ndarray = np.asarray((lv > 0).any(axis=0))
        for j, f in enumerate(pl.fields):
            key = (site, node, table.apid, j)
            tr = self._tracks.get(key)
            if tr is None:
                tr = self._tracks[key] = _Track()
            tr.level = int(lv[-1, j])
            if not active[j] and tr.viol == 0 and tr.cond == OK:
                continue  # the common case: all nominal, nothing carried
            cond, tr.viol, tr.red = condition(lv[:, j], int(pl.persistence[j]), tr.viol, tr.red)
            known = cond[cond != PENDING]
            if len(known) == 0:
                continue
            idx = np.flatnonzero(cond != PENDING)
            # transitions only: where the condition differs from the one before it
            prev = np.concatenate(([tr.cond], known[:-1]))
            for k in np.flatnonzero(known != prev):
                row = int(idx[k])
                t = float(times[row]) if times is not None else time.time()
                self._transition(site, node, pl.packet.name, f.name, f.unit, int(known[k]),
                                 float(table.values[row, pl.cols[j]]), t)
            tr.cond = int(known[-1])
        return lv

    def level(self, site: str, node: str, apid: int, field: str) -> str:
        """Limit state ("ok"/"yellow"/"red") of a field's latest sample, or "ok"."""
        pl = self.limits.get(apid)
        if pl is None:
            return "ok"
        for j, f in enumerate(pl.fields):
            if f.name == field:
                tr = self._tracks.get((site, node, apid, j))
                return LEVEL_NAMES[tr.level] if tr else "ok"
        return "ok"

    def set_condition(self, site: str, node: str, packet: str, field: str, level: int, value: float,
                      unit: str = "", t: float | None = None) -> None:
        """Drive an alarm from outside the limit checks (e.g. node liveness): level 0/1/2."""
        self._transition(site, node, packet, field, unit, level, value, time.time() if t is None else t)

    def _transition(self, site: str, node: str, packet: str, field: str, unit: str, cond: int, value: float,
                    t: float) -> None:
        key = (site, node, packet, field)
        a = self._open.get(key)
        name = f"{node} {packet}.{field}"
        val = f"{value:g} {unit}".strip()
        if cond > OK:
            sev = LEVEL_NAMES[cond]
            if a is None:
                a = {"site": site, "node": node, "packet": packet, "field": field, "state": "raised",
                     "severity": sev, "max_severity": sev, "value": value, "unit": unit, "returned": 0,
                     "raised_at": t, "updated_at": t, "acked_by": None, "acked_at": None,
                     "cleared_at": None, "shelved_until": None, "shelved_by": None}
                a["id"] = self.store.insert_alarm(a)
                self._open[key] = a
                self._log(a, f"{name} {sev.upper()} alarm raised: {val}", t)
            else:
                old = a["severity"]
                a.update(severity=sev, value=value, returned=0, updated_at=t)
                if cond > LEVEL_NAMES.index(old):
                    a["max_severity"] = LEVEL_NAMES[max(cond, LEVEL_NAMES.index(a["max_severity"]))]
                    if a["state"] == "acknowledged":
                        a["state"] = "raised"  # escalation needs a fresh acknowledgement
                    msg = f"{name} escalated {old}→{sev}: {val}"
                else:
                    msg = f"{name} now {sev}: {val}"
                self.store.update_alarm(a)
                self._log(a, msg, t)
        elif a is not None:
            a.update(value=value, updated_at=t)
            if a["state"] == "acknowledged":
                self._clear(a, t, f"{name} back in limits: {val}; alarm cleared")
            else:
                a["returned"] = 1
                self.store.update_alarm(a)
                self._log(a, f"{name} back in limits: {val} (alarm awaits acknowledgement)", t, "INFO")

    def _clear(self, a: Row, t: float, msg: str) -> None:
        a.update(state="cleared", cleared_at=t, updated_at=t)
        self.store.update_alarm(a)
        self._open.pop((a["site"], a["node"], a["packet"], a["field"]), None)
        self._log(a, msg, t, "INFO")

    def _log(self, a: Row, msg: str, t: float, severity: str | None = None) -> None:
        sev = severity or ("CRITICAL" if a["severity"] == "red" else "WARNING")
        self.store.event("alarm", msg, site=a["site"], node=a["node"], severity=sev,
                         data={"alarm": a["id"], "state": a["state"], "severity": a["severity"],
                               "param": f"{a['packet']}.{a['field']}"}, t=t)
        for fn in list(self.listeners):
            fn(_view(a, t))  # the shape GET /api/alarms answers (client_types.Alarm)

    # -- operator actions --------------------------------------------------------------

    def _get(self, alarm_id: int) -> Row:
        for a in self._open.values():
            if a["id"] == alarm_id:
                return a
        raise AlarmError(f"no open alarm {alarm_id}")

    def acknowledge(self, alarm_id: int, user: str = "operator", now: float | None = None) -> Row:
        """Acknowledge an open alarm; one whose value is already back in limits clears."""
        self.guard("acknowledging an alarm")
        now = time.time() if now is None else now
        a = self._get(alarm_id)
        a.update(acked_by=user, acked_at=now, updated_at=now)
        name = f"{a['node']} {a['packet']}.{a['field']}"
        if a["returned"]:
            a["state"] = "acknowledged"
            self._clear(a, now, f"{name} acknowledged by {user}; alarm cleared")
        else:
            a["state"] = "acknowledged"
            self.store.update_alarm(a)
            self._log(a, f"{name} alarm acknowledged by {user}", now, "INFO")
        return dict(a)

    def shelve(self, alarm_id: int, minutes: float, user: str = "operator", now: float | None = None) -> Row:
        """Hide an open alarm from the active list for ``minutes``."""
        self.guard("shelving an alarm")
        now = time.time() if now is None else now
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= MAX_SHELVE_MIN:
            raise ValueError(f"minutes must be a number in (0, {MAX_SHELVE_MIN}], got {minutes!r:.40}")
        a = self._get(alarm_id)
        a.update(shelved_until=now + minutes * 60.0, shelved_by=user, updated_at=now)
        self.store.update_alarm(a)
        self._log(a, f"{a['node']} {a['packet']}.{a['field']} alarm shelved by {user} for {minutes:g} min", now, "INFO")
        return dict(a)

    def unshelve(self, alarm_id: int, user: str = "operator", now: float | None = None) -> Row:
        self.guard("unshelving an alarm")
        now = time.time() if now is None else now
        a = self._get(alarm_id)
        a.update(shelved_until=None, shelved_by=None, updated_at=now)
        self.store.update_alarm(a)
        self._log(a, f"{a['node']} {a['packet']}.{a['field']} alarm unshelved by {user}", now, "INFO")
        return dict(a)

    def expire_shelves(self, now: float | None = None) -> None:
        """Unshelve alarms whose shelving time is over (call periodically)."""
        now = time.time() if now is None else now
        for a in list(self._open.values()):
            try:
                if a["shelved_until"] is not None and a["shelved_until"] <= now:
                    a.update(shelved_until=None, shelved_by=None, updated_at=now)
                    self.store.update_alarm(a)
                    self._log(a, f"{a['node']} {a['packet']}.{a['field']} alarm shelving expired", now, "INFO")
            except Exception:  # one bad alarm row must not stop the others expiring
                log.exception("alarm #%s: shelving expiry failed; unshelved", a.get("id"))
                a["shelved_until"] = None

    def active(self, include_shelved: bool = False, now: float | None = None) -> list[Row]:
        """Open alarms (raised or acknowledged), red first, newest first."""
        now = time.time() if now is None else now
        out = [_view(a, now) for a in self._open.values()]
        if not include_shelved:
            out = [a for a in out if not a["shelved"]]
        out.sort(key=lambda a: (a["severity"] != "red", a["state"] != "raised", -a["id"]))
        return out


def _sane(a: Row) -> None:
    """Repair an alarm row read back from disk so comparisons cannot raise (bad times become None)."""
    for k in ("shelved_until", "raised_at", "updated_at", "acked_at", "cleared_at", "value"):
        v = a.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            log.warning("alarm #%s: %s %r is not a number; ignored", a.get("id"), k, v)
            a[k] = None

"""Verified commanding: dictionary commands, signed, queued for contact, followed by ACKs.

Stages of one command (docs/ground-ops.md)::

    AWAITING_APPROVAL ──a second account approves──> (APPROVED) QUEUED
      ├─ the second account denies ──> DENIED
      └─ nobody approves within the approval timeout ──> EXPIRED
    QUEUED ──release──> SENT ──ACK ACCEPTED──> ACCEPTED ──ACK EXECUTED──> EXECUTED
      │ ↑                 │                       └─ACK FAILED──> FAILED
      │ └─ node asleep ─> HELD ──its announced contact − light time──> SENT
      │                   └─ACK REJECTED──> REJECTED       (any open stage) ──> TIMED_OUT
      └─ not_after passed before release ──> EXPIRED

Under the two-person rule (``two_person(name, hazardous)`` true; by default every
hazardous command) a command starts in AWAITING_APPROVAL and is released only after
another account approves it; APPROVED is recorded in its history on the way to QUEUED.
Who may send or approve is checked by the caller (ground.auth); the commander refuses
self-approval itself, so no caller can get it wrong.

A command is released when its node is reachable (ONLINE) and ``not_before`` has passed.
A node that announced a sleep (``hold(node)`` says so) gets nothing released into it: its
commands wait HELD (a stage in the history, with the announced contact) and are released
one light time before that contact, so the broker hands them over as the node reconnects;
a node asleep "until further notice" gets them when it is heard again.  A command already
SENT when its node falls asleep (the sleep announcement crossed it in flight) is delivered
by the broker at the next contact: its ACK deadlines run from that contact, so it is not
TIMED_OUT while the node sleeps (the history gets an ``ASLEEP`` note).
The window travels inside the signed TC too (wire-epoch seconds), so the node itself
refuses a TC delivered late (held by the broker through a sleep): REJECTED EXPIRED.
Its counter is allocated at release (strictly increasing per node, committed to the ops
database first, floored at the node-epoch second so a lost database cannot replay).
ACK timeouts include the round trip light time (2 × ``light_time``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ground.errors import CommandError
from ground.ops.store import OpsStore, Row
from ground.parse import Table
from wire import ccsds, timetag, topics
from wire.dictionary import CommandDef, Dictionary, load
from wire.inventory import Inventory

log = logging.getLogger("ground.commanding")

QUEUED, HELD, SENT, ACCEPTED, EXECUTED = "QUEUED", "HELD", "SENT", "ACCEPTED", "EXECUTED"
REJECTED, FAILED, TIMED_OUT, EXPIRED, CANCELLED = "REJECTED", "FAILED", "TIMED_OUT", "EXPIRED", "CANCELLED"
AWAITING_APPROVAL, APPROVED, DENIED = "AWAITING_APPROVAL", "APPROVED", "DENIED"
OPEN = (AWAITING_APPROVAL, QUEUED, HELD, SENT, ACCEPTED)
FINAL = (EXECUTED, REJECTED, FAILED, TIMED_OUT, EXPIRED, CANCELLED, DENIED)

Publish = Callable[[str, bytes], Awaitable[None]]
#: hold(node) -> None when the node is not known to sleep, else (ground time to release its
#: commands at, or None = when it is heard again; why, for the history)
Hold = Callable[[str], "tuple[float | None, str] | None"]


class SelfApproval(CommandError):
    """The sender of a command tried to approve or deny it."""


class Commander:
    """Builds, queues, releases and verifies telecommands for one site.

    ``publish(topic, payload)`` sends one TC (QoS 1); ``reachable(node)`` says whether a
    node is in contact now.  ``listeners`` get every command row after it changes.
    """

    def __init__(
        self,
        inventory: Inventory,
        store: OpsStore,
        publish: Publish | None = None,
        *,
        dictionary: Dictionary | None = None,
        reachable: Callable[[str], bool] | None = None,
        light_time: float = 1.28,
        ack_timeout: float = 5.0,
        exec_timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
        two_person: Callable[[str, bool], bool] | None = None,
        approval_timeout: float = 600.0,
        hold: Hold | None = None,
    ) -> None:
        self.inventory = inventory
        self.site = inventory.site
        self.store = store
        self.publish = publish
        self.dictionary = dictionary or load()
        self.reachable = reachable or (lambda node: True)
        self.hold: Hold = hold or (lambda node: None)
        #: raises (ground.ops.leader.NotLeader) on a follower ground; ``active()`` false there:
        #: nothing is released, expired or timed out (the leader's commander does that)
        self.guard: Callable[[str], None] = lambda what: None
        self.active: Callable[[], bool] = lambda: True
        self.light_time = light_time
        self.ack_timeout = ack_timeout
        self.exec_timeout = exec_timeout
        self.clock = clock
        self.two_person = two_person or (lambda name, hazardous: False)
        self.approval_timeout = approval_timeout
        self.listeners: list[Callable[[Row], None]] = []
        #: called with (command row, counter, ground time) when a TC leaves (the time keeper
        #: measures round trips from it)
        self.released: list[Callable[[Row, int, float], None]] = []
        #: the one-way light time to a node (measured by the time keeper; TIME_SYNC values)
        self.owlt: Callable[[str], float] = lambda node: self.light_time
        self._cmds: dict[int, Row] = {}
        self._by_counter: dict[tuple[str, int], int] = {}
        self._finished: dict[int, Row] = {}
        self._late: dict[tuple[str, int], int] = {}  # (node, counter) of finished commands -> id
        self._waiters: dict[int, list[asyncio.Future[Row]]] = {}
        self._lock: asyncio.Lock | None = None
        self.errors = 0  # commands the ground itself failed on (bad row, exception): failed, not retried
        self.finals: dict[str, int] = {}  # final stage -> commands that reached it since start
        self.last_error: str | None = None
        for c in reversed(store.commands(limit=10000, open_only=True)):  # resume after restart
            self._cmds[c["id"]] = c
            if isinstance(c.get("counter"), int):
                self._by_counter[(c["node"], c["counter"])] = c["id"]

    # -- submission ----------------------------------------------------------------------

    def validate(self, node: str, command: str, args: dict[str, Any], confirm: bool) -> CommandDef:
        """The CommandDef, after checking node, arguments and confirmation; CommandError if not."""
        try:
            self.inventory.node(node)
        except KeyError as e:
            raise CommandError(str(e.args[0])) from None
        try:
            cd = self.dictionary.command(command)
        except KeyError as e:
            raise CommandError(str(e.args[0])) from None
        a = dict(args)
        if cd.name == "TIME_SYNC" and not a:
            a = {"coarse": 0, "fine": 0}  # filled at release: ground time + one-way light time
        try:
            cd.pack_args(**a)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if cd.hazardous and not confirm:
            raise CommandError(f"{cd.name} is hazardous: resend with confirm=true")
        return cd

    async def submit(
        self,
        node: str,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        user: str = "operator",
        confirm: bool = False,
        not_before: float | None = None,
        not_after: float | None = None,
    ) -> Row:
        """Queue a command (released at once when the node is in contact); returns its row."""
        self.guard("sending a command")
        if args is not None and not isinstance(args, dict):
            raise CommandError("args must be an object of argument name -> value")
        args = dict(args or {})
        cd = self.validate(node, command, args, confirm)
        now = self.clock()
        for name, t in (("not_before", not_before), ("not_after", not_after)):
            if t is not None and not _is_time(t):
                raise CommandError(f"{name} must be a Unix time in seconds (a finite number), got {t!r:.40}")
        if not_after is not None and not_before is not None and not_after < not_before:
            raise CommandError("not_after is before not_before")
        two = self.two_person(cd.name, cd.hazardous)
        stage, why = (AWAITING_APPROVAL, "a second account must approve (two-person rule)") if two else (QUEUED, "")
        c: Row = {"site": self.site, "node": node, "command": cd.name, "opcode": cd.opcode, "args": args,
                  "user": user, "submitted": now, "not_before": not_before, "not_after": not_after,
                  "counter": None, "stage": stage, "reason": why, "updated": now,
                  "history": [[stage, now, why]], "hazardous": cd.hazardous, "confirmed": bool(confirm),
                  "approved_by": None}
        c["id"] = self.store.insert_command(c)
        self._cmds[c["id"]] = c
        self.store.event("command", f"{node} {cd.name} #{c['id']} {stage} by {user} {_fmt_args(args)}".rstrip(),
                         site=self.site, node=node, data={"command": c["id"], "stage": stage, "user": user})
        self._notify(c)
        await self.pump()
        return dict(c)

    def cancel(self, cid: int, user: str = "operator") -> Row:
        """Cancel a command not yet sent (QUEUED, HELD or AWAITING_APPROVAL)."""
        self.guard("cancelling a command")
        c = self._cmds.get(cid)
        if c is None or c["stage"] not in (QUEUED, HELD, AWAITING_APPROVAL):
            raise CommandError(f"command {cid} is not queued")
        self._stage(c, CANCELLED, f"cancelled by {user}", user=user)
        return dict(c)

    def _awaiting(self, cid: int, user: str) -> Row:
        self.guard("approving or denying a command")
        c = self._cmds.get(cid)
        if c is None or c["stage"] != AWAITING_APPROVAL:
            raise CommandError(f"command {cid} is not awaiting approval")
        if c["user"] == user:
            raise SelfApproval(f"{user} sent command {cid}: a second account must approve or deny it")
        return c

    async def approve(self, cid: int, user: str) -> Row:
        """A second account approves: APPROVED goes in the history and the command is queued."""
        c = self._awaiting(cid, user)
        c["approved_by"] = user
        self._stage(c, APPROVED, f"approved by {user}", user=user)
        self._stage(c, QUEUED, "")
        await self.pump()
        return dict(c)

    def deny(self, cid: int, user: str, reason: str = "") -> Row:
        """A second account denies: the command ends DENIED, never sent."""
        c = self._awaiting(cid, user)
        self._stage(c, DENIED, f"denied by {user}" + (f": {reason[:200]}" if reason else ""), user=user)
        return dict(c)

    # -- release, expiry, timeouts --------------------------------------------------------

    async def pump(self, now: float | None = None) -> None:
        """Release due commands, expire stale queued ones, time out silent ones."""
        if not self.active():
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self.clock() if now is None else now
            for c in sorted(self._cmds.values(), key=lambda c: c["id"]):
                try:
                    await self._pump_one(c, now)
                except Exception as e:  # one bad command must not hold the others
                    self._ground_failed(c, e)

    async def _pump_one(self, c: Row, now: float) -> None:
        _check_row(c)
        st = c["stage"]
        if st == AWAITING_APPROVAL:
            if now > c["submitted"] + self.approval_timeout:
                self._stage(c, EXPIRED, f"no second account approved within {self.approval_timeout:g} s")
            elif c["not_after"] is not None and now > c["not_after"]:
                self._stage(c, EXPIRED, "validity window closed while awaiting approval")
        elif st in (QUEUED, HELD):
            if c["not_after"] is not None and now > c["not_after"]:
                self._stage(c, EXPIRED, "validity window closed before the node was reachable")
            elif c["not_before"] is None or now >= c["not_before"]:
                h = self.hold(c["node"])
                if h is None:
                    if self.reachable(c["node"]):
                        await self._release(c, now)
                elif h[0] is not None and now >= h[0] and not (c["command"] == "TIME_SYNC" and not c["args"]):
                    # (a TIME_SYNC filled at release waits until the node is heard: the broker
                    # holding it until the reconnect would make its value late)
                    c["_asleep"] = True  # released for the contact: no "went to sleep" note
                    await self._release(c, now)  # its announced contact: the broker keeps it until then
                elif st == QUEUED:
                    self._stage(c, HELD, h[1])
        elif st in (SENT, ACCEPTED):
            rt = 2.0 * self.light_time
            h = self.hold(c["node"])
            if h is not None:
                # asleep before it answered: the broker delivers it at the next contact, so
                # the deadlines run from then (from now on, while the contact is unknown)
                due = now if h[0] is None else h[0] + rt
                if due > (c.get("sent_at") or 0.0):
                    c["sent_at"] = due
                    if not c.get("_asleep"):
                        c["_asleep"] = True
                        self._note(c, "ASLEEP", f"the node went to sleep before it answered: {h[1]}")
            sent = c.get("sent_at") or c["updated"]
            if st == SENT and now > sent + rt + self.ack_timeout:
                self._stage(c, TIMED_OUT, f"no ACCEPTED ack within {self.ack_timeout:g} s + {rt:g} s light time")
            elif st == ACCEPTED and now > sent + rt + self.exec_timeout:
                self._stage(c, TIMED_OUT, f"no EXECUTED ack within {self.exec_timeout:g} s + {rt:g} s light time")

    async def _release(self, c: Row, now: float) -> None:
        if self.publish is None:
            return
        cd = self.dictionary.command(c["command"])
        args = dict(c["args"])
        t_tx = self.clock()  # a TIME_SYNC's value and its round trip are measured from here
        if cd.name == "TIME_SYNC" and not args:
            coarse, fine = timetag.split(timetag.unix_to_node(t_tx + self.owlt(c["node"])))
            args = {"coarse": coarse, "fine": fine}
            c["args"] = args
        key = self.inventory.node(c["node"]).key
        coarse, fine = timetag.split(timetag.unix_to_node(now))
        counter = self.store.next_counter(self.site, c["node"], floor=coarse)
        nb, na = wire_window(c["not_before"], c["not_after"])
        tc = ccsds.build_tc(key, c["node"].encode(), self.dictionary.tc_apid, counter & ccsds.SEQ_MASK, cd.opcode,
                            counter, cd.pack_args(**args), coarse, fine, 0, nb, na)
        c["counter"] = counter
        self._by_counter[(c["node"], counter)] = c["id"]
        try:
            await self.publish(topics.topic(self.site, c["node"], topics.CMD), tc)
        except Exception as e:  # broker down: stay queued, retry on the next pump
            log.warning("publishing %s #%d to %s failed: %s", cd.name, c["id"], c["node"], e)
            c["reason"] = f"publish failed: {e}"
            return
        c["sent_at"] = self.clock()
        for fn in list(self.released):
            fn(c, counter, t_tx)
        self._stage(c, SENT, f"counter {counter}, {len(tc)} B")

    def _ground_failed(self, c: Row, e: Exception) -> None:
        """Fail a command the ground cannot process (e.g. an unreadable row from the ops database)."""
        self.errors += 1
        self.last_error = f"#{c.get('id')}: {type(e).__name__}: {e}"[:300]
        log.error("command #%s cannot be processed (%s: %s): marked FAILED", c.get("id"), type(e).__name__, e)
        try:
            self._stage(c, FAILED, f"ground error: {type(e).__name__}: {e}"[:300])
        except Exception:  # not even storable: drop it from the queue, keep the others going
            log.exception("command #%s could not be marked FAILED; dropped from the queue", c.get("id"))
            self._cmds.pop(int(c.get("id") or 0), None)

    def _stage(self, c: Row, stage: str, reason: str, user: str | None = None) -> None:
        now = self.clock()
        c["stage"], c["reason"], c["updated"] = stage, reason, now
        c["history"] = list(c["history"]) + [[stage, now, reason]]
        if stage in FINAL:
            self.finals[stage] = self.finals.get(stage, 0) + 1
        self.store.update_command(_public(c))
        sev = {REJECTED: "ERROR", FAILED: "ERROR", TIMED_OUT: "WARNING", EXPIRED: "WARNING", DENIED: "WARNING"}.get(stage, "INFO")
        self.store.event("command", f"{c['node']} {c['command']} #{c['id']} {stage}" + (f": {reason}" if reason else ""),
                         site=self.site, node=c["node"], severity=sev,
                         data={"command": c["id"], "stage": stage, "reason": reason, "counter": c["counter"],
                               **({"user": user} if user else {})})
        if stage in FINAL:
            self._cmds.pop(c["id"], None)
            self._by_counter.pop((c["node"], c["counter"]), None)
            self._finished[c["id"]] = c
            if c.get("counter") is not None:
                self._late[(c["node"], c["counter"])] = c["id"]  # an ACK may still come (late stage)
            while len(self._finished) > 1000:
                old = self._finished.pop(next(iter(self._finished)))
                if old.get("counter") is not None:  # never released: no counter, no late-ACK entry
                    self._late.pop((old["node"], old["counter"]), None)
        self._notify(c)

    def _note(self, c: Row, what: str, why: str) -> None:
        """A history entry that is not a stage (the stage stays): stored, pushed, logged."""
        now = self.clock()
        c["history"] = list(c["history"]) + [[what, now, why]]
        self.store.update_command(_public(c))
        self.store.event("command", f"{c['node']} {c['command']} #{c['id']} {what}: {why}", site=self.site,
                         node=c["node"], data={"command": c["id"], "stage": what, "reason": why, "counter": c["counter"]})
        self._notify(c)

    def _notify(self, c: Row) -> None:
        row = _public(c)
        for fn in list(self.listeners):
            fn(row)
        for fut in self._waiters.pop(c["id"], []) if c["stage"] in FINAL else []:
            if not fut.done():
                fut.set_result(row)

    # -- ACKs ------------------------------------------------------------------------------

    def on_ack(self, node: str, table: Table) -> None:
        """Apply a node's ACK packets (the APID 7 Table of one parse) to open commands."""
        cols = table.columns
        ctr = table.values[:, cols.index("tc_counter")].astype(np.int64)
        stage = table.values[:, cols.index("stage")].astype(np.int64)
        reason = table.values[:, cols.index("reason")].astype(np.int64)
        stages = self.dictionary.enums["ack_stage"]
        reasons = self.dictionary.enums["ack_reason"]
        for k in range(len(ctr)):
            cid = self._by_counter.get((node, int(ctr[k])))
            c = self._cmds.get(cid) if cid is not None else None
            s = stages.get(int(stage[k]), str(stage[k]))
            r = reasons.get(int(reason[k]), str(reason[k]))
            if c is None:
                late = self._late.get((node, int(ctr[k])))
                f = self._finished.get(late) if late is not None else None
                if f is not None and f["stage"] not in (EXECUTED, REJECTED, FAILED):
                    self._late_ack(f, s, r)
                elif f is not None:  # the node already answered: a redelivered or reordered ACK
                    log.debug("%s: repeated ACK %s for #%s (%s)", node, s, f["id"], f["stage"])
                else:
                    log.info("%s: ACK %s for unknown counter %d", node, s, ctr[k])
                continue
            if s == "ACCEPTED" and c["stage"] == SENT:
                self._stage(c, ACCEPTED, "")
            elif s in ("EXECUTED", "REJECTED", "FAILED"):
                self._stage(c, s, "" if r == "OK" else r)

    def _late_ack(self, c: Row, s: str, r: str) -> None:
        """An ACK for a command already final (e.g. TIMED_OUT while the node slept and ran it
        at its next contact): recorded as a late stage in its history, the stage kept."""
        now = self.clock()
        late = f"LATE_{s}"
        why = f"after {c['stage']}" + ("" if r == "OK" else f": {r}")
        c["history"] = list(c["history"]) + [[late, now, why]]
        c["late"] = s
        self.store.update_command({k: v for k, v in _public(c).items() if k != "late"})
        sev = "WARNING" if s in ("EXECUTED", "ACCEPTED") else "ERROR"
        self.store.event("command", f"{c['node']} {c['command']} #{c['id']} {late} ({why})", site=self.site,
                         node=c["node"], severity=sev,
                         data={"command": c["id"], "stage": late, "reason": why, "counter": c["counter"]})
        log.warning("%s %s #%s: %s arrived %s", c["node"], c["command"], c["id"], s, why)
        self._notify(c)

    # -- queries and waiting ---------------------------------------------------------------

    def get(self, cid: int) -> Row | None:
        c = self._cmds.get(cid) or self._finished.get(cid)
        if c is not None:
            return _public(c)
        rows = self.store.commands(limit=1, cid=cid)
        return rows[0] if rows else None

    def list(self, limit: int = 200) -> list[Row]:
        return self.store.commands(limit=limit)

    async def wait(self, cid: int, timeout: float | None = None) -> Row:
        """The command's row once it reaches a final stage (asyncio.TimeoutError after timeout)."""
        c = self.get(cid)
        if c is None:
            raise CommandError(f"no command {cid}")
        if c["stage"] in FINAL:
            return c
        fut: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(cid, []).append(fut)
        return await asyncio.wait_for(fut, timeout)


def wire_window(not_before: float | None, not_after: float | None) -> tuple[int, int]:
    """A command's validity window (unix s, None = open) as the TC's wire-epoch seconds (0 = open).

    Rounded outwards to whole seconds, so the node never refuses a TC the ground thinks valid.
    """
    nb = 0 if not_before is None else max(1, math.floor(timetag.unix_to_node(not_before)))
    na = 0 if not_after is None else min(0xFFFFFFFF, max(1, math.ceil(timetag.unix_to_node(not_after))))
    return nb, na


def _public(c: Row) -> Row:
    """The row as stored and shown: without the commander's own bookkeeping keys."""
    return {k: v for k, v in c.items() if k != "sent_at" and not k.startswith("_")}


def _is_time(t: Any) -> bool:
    return isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and 0 <= t < 2**33


def _check_row(c: Row) -> None:
    """ValueError unless an open command row has the types the queue relies on (rows come from disk)."""
    for k in ("not_before", "not_after"):
        if c.get(k) is not None and not _is_time(c[k]):
            raise ValueError(f"{k} {c[k]!r:.40} is not a Unix time")
    if not isinstance(c.get("args"), dict):
        raise ValueError(f"args {c.get('args')!r:.40} is not an object")
    if c.get("counter") is not None and not isinstance(c["counter"], int):
        raise ValueError(f"counter {c['counter']!r:.40} is not an integer")
    for k in ("sent_at", "updated"):
        if c.get(k) is not None and not _is_time(c[k]):
            raise ValueError(f"{k} {c[k]!r:.40} is not a Unix time")


def _fmt_args(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items())

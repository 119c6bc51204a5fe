"""Custody acknowledgements: the ground tells each node what the archive has committed.

An ingest sink (docs/custody.md).  ``on_packets`` runs after the archive transaction holding
the packets committed (``ground.ingest.Pipeline``), so every packet it sees is in the
archive -- fresh ones and duplicates alike (a duplicate is a copy of an archived packet).
Per (node, APID) it keeps ``through``, the sequence count up to which every packet is
archived, and the counts archived beyond a hole (``ahead``); a packet at ``through + 1``
moves ``through`` over everything contiguous.  Every ``interval`` s, for each node with
news, it publishes ``wire.custody.build(...)`` (HMAC with the node's key, a counter of
its own) on the node's cmd topic; the node then lets go of the covered packets.

What is persisted (a table in the ops SQLite database, written before the message is
published): per (node, APID) ``through`` and per node the last counter, so a restarted
ground neither repeats a counter (the node would refuse it) nor states less than it did.
The ``ahead`` counts are not kept: the node re-sends everything it holds after its
custody timeout, which rebuilds them.

Where custody starts: the first packet of an APID this ground ever sees sets ``through``
just before it (the node streams its journal oldest first, so that is its oldest
unconfirmed packet).  A hole that stays open ``give_up_s`` while later packets arrive
(the node dropped those packets when its journal filled, or they were produced before a
reflash) is skipped, logged and counted in ``skipped``, or custody would stall for good.

Several ingest workers on one shared subscription each see only part of a node's
packets: custody needs the whole picture, so it runs with one ingest worker (the
``lunabase ground`` default); see docs/custody.md.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ground.parse import ParseResult, Rejected
from wire import ccsds, custody, topics
from wire.ccsds import SEQ_MOD
from wire.inventory import Inventory

log = logging.getLogger("ground.custody")

HALF = SEQ_MOD // 2
MAX_AHEAD = 4096  # counts held beyond one hole; more and the hole is given up

SCHEMA = """
CREATE TABLE IF NOT EXISTS custody (
    site TEXT NOT NULL, node TEXT NOT NULL, apid INTEGER NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (site, node, apid)
);
"""
_COUNTER = -1  # the apid column's row holding a node's last custody counter


@dataclass
class _Apid:
    through: int  # every packet up to this sequence count is archived
    ahead: set[int] = field(default_factory=set)
    hole_since: float = 0.0  # when packets first arrived beyond the current hole
    dropped: int | None = None  # the node says it dropped unconfirmed packets up to this count
    stated: int = -1  # the through the last acknowledgement sent (-1: none yet, = the start point)

    def __post_init__(self) -> None:
        if self.stated < 0:
            self.stated = self.through


@dataclass
class NodeCustody:
    """One node's custody state, as the API and the tests see it."""

    apids: dict[int, _Apid] = field(default_factory=dict)
    counter: int = 0
    dirty: bool = False
    sent: int = 0  # acknowledgements published
    failed: int = 0  # publishes that failed (broker down): retried at the next interval
    skipped: int = 0  # sequence counts given up (never archived)
    confirmed: int = 0  # sequence counts newly covered by the acknowledgements built (skipped ones too)
    last_sent: float = 0.0

    def view(self) -> dict[str, Any]:
        return {"through": {str(a): s.through for a, s in sorted(self.apids.items())},
                "holes": {str(a): len(s.ahead) for a, s in sorted(self.apids.items()) if s.ahead},
                "counter": self.counter, "sent": self.sent, "failed": self.failed, "skipped": self.skipped,
                "confirmed": self.confirmed}


class CustodySender:
    """The ingest sink that acknowledges committed packets to their nodes (see the module doc)."""

    def __init__(self, inventory: Inventory, publish: Callable[[str, bytes], Awaitable[Any]] | None,
                 db: str | Path = ":memory:", interval: float = 1.0, give_up_s: float = 600.0) -> None:
        self.site = inventory.site
        self.keys = {n.id: n.key for n in inventory.nodes}
        self.publish = publish
        self.interval, self.give_up_s = interval, give_up_s
        #: false on a follower ground (ground/ops/leader.py): it keeps the picture, the leader
        #: alone speaks (two senders' counters would interleave and the node refuse half)
        self.active: Callable[[], bool] = lambda: True
        self.nodes: dict[str, NodeCustody] = {}
        self._lock = threading.Lock()  # on_packets may run in ingest's thread, the sender in the loop's
        self.db = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)
        if str(db) != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        for node, apid, value in self.db.execute("SELECT node, apid, value FROM custody WHERE site = ?", (self.site,)):
            nc = self.nodes.setdefault(node, NodeCustody())
            if apid == _COUNTER:
                nc.counter = int(value)
            else:
                nc.apids[int(apid)] = _Apid(int(value))

    # -- the ingest sink ---------------------------------------------------------------------
    def on_packets(self, site: str, node: str, result: ParseResult, fresh: np.ndarray | None,
                   received: float) -> None:
        if site != self.site or node not in self.keys:
            return
        now = time.monotonic()
        with self._lock:
            nc = self.nodes.setdefault(node, NodeCustody())
            for apid, tab in result.tables.items():
                if not 0 <= apid < custody.NAPID:
                    continue
                seqs = result.seq[tab.rows]
                if len(seqs):
                    self._feed(nc, int(apid), seqs, now)
            nc.dirty = True

    def on_status(self, site: str, node: str, status: dict[str, Any], received: float) -> None:
        """A node's status says up to which count it dropped unconfirmed packets of each APID
        (``custody[3:11]``, 0x8000 | count; firmware journal): the ground stops waiting for them."""
        cu = status.get("custody")
        if site != self.site or node not in self.keys or not isinstance(cu, list) or len(cu) < 11:
            return
        with self._lock:
            nc = self.nodes.setdefault(node, NodeCustody())
            for apid, v in enumerate(cu[3:11]):
                st = nc.apids.get(apid)
                if st is None or not isinstance(v, int) or isinstance(v, bool) or not v & ccsds.CUSTODY_VALID:
                    continue
                st.dropped = v & ccsds.SEQ_MASK
                if self._apply_dropped(nc, apid, st):
                    nc.dirty = True

    def on_rejected(self, site: str, node: str, rejected: Sequence[Rejected], payload: bytes) -> None:
        pass  # a rejected packet is not archived: nothing to acknowledge

    def _feed(self, nc: NodeCustody, apid: int, seqs: np.ndarray, now: float) -> None:
        st = nc.apids.get(apid)
        if st is None:
            st = nc.apids[apid] = _Apid((int(seqs[0]) - 1) % SEQ_MOD)
        # fast path: the run continues exactly where custody stands
        if not st.ahead and int(seqs[0]) == (st.through + 1) % SEQ_MOD and (
                len(seqs) == 1 or bool(np.all(np.diff(seqs.astype(np.int32)) % SEQ_MOD == 1))):
            st.through = int(seqs[-1])
            return
        for s in seqs.tolist():
            d = (s - st.through) % SEQ_MOD
            if d == 0 or d >= HALF:
                continue  # at or before the custody point: already stated
            if d == 1:
                st.through = s
                self._close_up(st)
            else:
                if not st.ahead:
                    st.hole_since = now
                st.ahead.add(s)
        if st.dropped is not None:
            self._apply_dropped(nc, apid, st)
        if st.ahead and (len(st.ahead) > MAX_AHEAD or now - st.hole_since > self.give_up_s):
            self._give_up(nc, apid, st, now)

    def _apply_dropped(self, nc: NodeCustody, apid: int, st: _Apid) -> bool:
        """Skip the hole the node's drops left: only when the dropped count lies between the
        custody point and the newest count archived (so a stale statement, e.g. from before
        a sequence wrap, can never move custody past a hole the node still holds)."""
        d = st.dropped
        if d is None or not st.ahead:
            return False
        ahead = (d - st.through) % SEQ_MOD
        newest = max(st.ahead, key=lambda s: (s - st.through) % SEQ_MOD)
        if not 0 < ahead < HALF or (newest - d) % SEQ_MOD >= HALF:
            return False
        log.info("custody: APID %d counts %d..%d were dropped by the node (its status): custody moves past them",
                 apid, (st.through + 1) % SEQ_MOD, d)
        nc.skipped += sum(1 for k in range(1, ahead + 1) if (st.through + k) % SEQ_MOD not in st.ahead)
        st.ahead = {s for s in st.ahead if (s - st.through) % SEQ_MOD > ahead}
        st.through = d
        self._close_up(st)
        return True

    @staticmethod
    def _close_up(st: _Apid) -> None:
        nxt = (st.through + 1) % SEQ_MOD
        while nxt in st.ahead:
            st.ahead.discard(nxt)
            st.through = nxt
            nxt = (nxt + 1) % SEQ_MOD
        # counts that fell at or behind the point (a wrap, a reset) are no longer "ahead"
        if st.ahead:
            st.ahead = {s for s in st.ahead if 1 < (s - st.through) % SEQ_MOD < HALF}
        if st.ahead:
            st.hole_since = time.monotonic()

    def _give_up(self, nc: NodeCustody, apid: int, st: _Apid, now: float) -> None:
        first = min(st.ahead, key=lambda s: (s - st.through) % SEQ_MOD)
        n = (first - st.through - 1) % SEQ_MOD
        log.warning("custody: APID %d sequence counts %d..%d never came for %.0f s (dropped by the node, or "
                    "older than its journal): custody moves past them", apid, (st.through + 1) % SEQ_MOD,
                    (first - 1) % SEQ_MOD, now - st.hole_since)
        nc.skipped += n
        st.through = first
        st.ahead.discard(first)
        self._close_up(st)

    # -- sending ---------------------------------------------------------------------------------
    def messages(self, nodes: list[str]) -> list[tuple[str, str, bytes]]:
        """The next acknowledgement of each of ``nodes``: [(node, topic, message)].  Their
        counters and points are persisted first, in one transaction (WAL, synchronous
        NORMAL: a counter lost to a power cut is made up by the clock it starts from)."""
        out: list[tuple[str, str, bytes]] = []
        rows: list[tuple[str, str, int, int]] = []
        now_s = int(time.time()) - ccsds.EPOCH_UNIX
        with self._lock:
            for node in nodes:
                nc = self.nodes.get(node)
                if nc is None or not nc.apids:
                    continue
                through = {a: s.through for a, s in nc.apids.items()}
                for st in nc.apids.values():
                    d = (st.through - st.stated) % SEQ_MOD
                    if d < HALF:  # (a stale point behind the stated one confirms nothing new)
                        nc.confirmed += d
                        st.stated = st.through
                nc.counter = max(now_s, nc.counter + 1) & 0xFFFFFFFF
                nc.dirty = False
                rows += [(self.site, node, a, v) for a, v in through.items()] + [(self.site, node, _COUNTER, nc.counter)]
                out.append((node, topics.topic(self.site, node, topics.CMD),
                            custody.build(self.keys[node], node.encode(), nc.counter, through)))
        if rows:
            self.db.execute("BEGIN")
            try:
                self.db.executemany("INSERT OR REPLACE INTO custody (site, node, apid, value) VALUES (?, ?, ?, ?)",
                                    rows)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return out

    def message(self, node: str) -> tuple[str, bytes] | None:
        """The next acknowledgement for ``node`` (persisting its counter and points first)."""
        m = self.messages([node])
        return (m[0][1], m[0][2]) if m else None

    async def send_due(self) -> int:
        """Publish an acknowledgement to every node with news; -> how many were sent."""
        if self.publish is None or not self.active():
            return 0
        n = 0
        for node, topic, msg in self.messages([node for node, nc in list(self.nodes.items()) if nc.dirty]):
            nc = self.nodes[node]
            try:
                await self.publish(topic, msg)
            except Exception as e:  # broker down: the node re-sends, which makes it dirty again
                nc.failed += 1
                nc.dirty = True
                log.debug("custody ack to %s not published: %s", node, e)
                continue
            nc.sent += 1
            nc.last_sent = time.time()
            n += 1
        return n

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.send_due()
            except Exception:  # a database error must not end custody for good
                log.exception("custody: sending acknowledgements failed")

    def view(self) -> dict[str, Any]:
        with self._lock:
            return {node: nc.view() for node, nc in sorted(self.nodes.items())}

    def close(self) -> None:
        self.db.close()


__all__ = ["CustodySender", "NodeCustody"]

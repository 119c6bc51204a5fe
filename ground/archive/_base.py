"""The archive interface shared by the SQLite and PostgreSQL backends.

Schema (both backends; SQL types differ slightly)::

    nodes(id, site, node)                         one row per (site, node), ids are small ints
    raw(node_id, apid, ticks, seq, crc, received, data)
                                                  every accepted packet, PRIMARY KEY
                                                  (node_id, apid, ticks, seq, crc): the
                                                  de-duplication key and the time index at once
    collisions(node_id, apid, ticks, seq, crc, received, data, reason)
                                                  packets whose key matched an archived packet
                                                  but whose bytes differ: kept, never dropped
    timecorr(node_id, lo, hi, corr, quality, boot, updated)
                                                  node-time ranges [lo, hi) whose time tags are
                                                  corrected by ``corr`` ticks (pre-sync packets)
    tm_<packet>(node_id, t0, t1, n, received, ticks, seq, vals, texts, samples)
                                                  decoded engineering values, one table per APID,
                                                  in column-wise segments of many packets (one
                                                  row per node and APID per ingest batch; see
                                                  decoded_segment); SEISMIC keeps int16 samples
    status(node_id, received, state, body)        every status message (birth, sleep, last will)
    seqstate(node_id, apid, expected, last_ticks, late, resets, updated)
    gaps(id, node_id, apid, first, count, missing, t_lo, t_hi, detected, updated, state,
         requests, last_request, node_dropped, reason)
                                                  sequence-gap accounting shared by every
                                                  ingest worker (ground/archive/_gaps.py)
    quarantine(received, topic, reason, size, detail, sample)
                                                  messages ingest could not accept whole (bad
                                                  topic, oversized, malformed status, an
                                                  exception): topic and detail as text, the
                                                  first bytes of the payload (docs/ground-data.md)

``ticks`` is the packet time tag in 2^-16 s since 2000-01-01T00:00:00Z (coarse << 16 | fine);
``crc`` is the packet's own CRC-16 trailer; ``received`` is ground Unix time.  The raw table
is the truth: ``rebuild()`` recreates every decoded table from it.

The de-duplication key (docs/ground-data.md): a QoS 1 redelivery or a journal replay
carries the same bytes, so the same (node, APID, time tag, sequence count, CRC) is the same
packet.  A node whose clock and counters restart (reset, reflash) produces packets with an
old (time tag, count) but other contents, hence another CRC: a new key, archived.  Were the
CRC equal too while the bytes differ (1 in 65,536 such pairs), the packet goes to
``collisions`` with its reason and is counted: never dropped as a duplicate.

Time tags are never rewritten: packets a node stamped before its clock was synced keep
their tag, and ``timecorr`` says how to correct it.  Queries return ``time`` corrected and
``time_quality`` (TIME_QUALITY): "synced" (the node's clock), "corrected" (pre-sync,
corrected by the step the node reported), "estimated" (pre-sync, corrected by the ground's
correlation; the sync is still to come), "unsynced" (no correction known).

Schema versions: 1 = key (node_id, apid, ticks, seq); 2 = crc in the key, collisions,
timecorr; 3 = seqstate and gaps (gap accounting in the archive).  Opening an older archive
migrates it in one transaction (v2 -> v3 seeds ``seqstate`` from the newest archived
packet of every node and APID, so the first packets after the upgrade are accounted).
"""

from __future__ import annotations

import abc
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ground.archive import _gaps
from ground.parse import Parser, ParseResult
from wire.dictionary import Dictionary, PacketDef, load
from wire.timetag import TICKS_PER_S, ticks_to_unix, unix_to_ticks

SCHEMA_VERSION = 3
#: time quality codes in ``timecorr.quality`` -> names in query results
SYNCED, CORRECTED, ESTIMATED, UNSYNCED = 0, 1, 2, 3
TIME_QUALITY = {SYNCED: "synced", CORRECTED: "corrected", ESTIMATED: "estimated", UNSYNCED: "unsynced"}
OPEN_END = 1 << 62  # hi of a correction range still open (the node has not synced yet)
#: collisions.reason: same (node, APID, time tag, count, CRC) as an archived packet, other bytes
KEY_COLLISION = "key_collision"


def packet_crcs(result: ParseResult, payload: bytes) -> np.ndarray:
    """The CRC-16 trailer of every packet of ``result`` (int64), read from ``payload``."""
    if not result.count:
        return np.zeros(0, np.int64)
    b = np.frombuffer(payload, np.uint8)
    end = result.offset.astype(np.int64) + result.length
    return (b[end - 2].astype(np.int64) << 8) | b[end - 1]


@dataclass(frozen=True)
class TimeCorrection:
    """Packets of one node stamped in node time [lo, hi) ticks are ``corr`` ticks off."""

    lo: int
    hi: int
    corr: int
    quality: int
    boot: int = 0
    updated: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"from": ticks_to_unix(self.lo), "to": None if self.hi >= OPEN_END else ticks_to_unix(self.hi),
                "correction_s": self.corr / TICKS_PER_S, "quality": TIME_QUALITY.get(self.quality, "?"),
                "boot": self.boot, "updated": self.updated}


def correct_ticks(ticks: np.ndarray, ranges: Sequence[TimeCorrection]) -> tuple[np.ndarray, np.ndarray]:
    """(corrected ticks, quality codes) of one node's time tags under its correction ranges.

    Ranges may overlap (two boots that never synced): the one opened last wins.
    """
    out = ticks.astype(np.int64, copy=True)
    q = np.zeros(len(out), np.int8)
    for r in sorted(ranges, key=lambda r: r.lo):
        m = (ticks >= r.lo) & (ticks < r.hi)
        if m.any():
            out[m] = ticks[m] + r.corr
            q[m] = r.quality
    return out, q


@dataclass(frozen=True)
class RawPacket:
    """One archived packet as it arrived; ``time`` is the corrected Unix time of its tag."""

    site: str
    node: str
    apid: int
    seq: int
    ticks: int
    received: float
    data: bytes
    time: float = 0.0
    quality: str = "synced"


@dataclass(frozen=True)
class DecodedSpec:
    """How one APID is laid out in its decoded table."""

    apid: int
    name: str
    table: str
    numeric: tuple[str, ...]  # REAL columns, in ParseResult Table.columns order
    texts: tuple[str, ...]  # TEXT columns (bytes fields, NULs stripped)
    samples: bool  # has an int16 sample block stored as BLOB column "samples"

    @property
    def columns(self) -> tuple[str, ...]:
        return ("node_id", "ticks", "seq", "received") + self.numeric + self.texts + (("samples",) if self.samples else ())

    @property
    def summary(self) -> tuple[str, ...]:
        """The segment's per-field min and max columns (lo0, hi0, lo1, ...: numeric field order),
        which let the database bucket a long range for a plot (ground.archive._decimate)."""
        return tuple(c for i in range(len(self.numeric)) for c in (f"lo{i}", f"hi{i}"))

    @property
    def segment_columns(self) -> tuple[str, ...]:
        """A decoded table's columns, in the order of ``decoded_segment``'s tuple."""
        return ("node_id", "t0", "t1", "n", "received", "ticks", "seq", "vals", "texts", "samples") + self.summary


def decoded_specs(d: Dictionary | None = None) -> dict[int, DecodedSpec]:
    d = d or load()
    out = {}
    for p in d.packets:
        out[p.apid] = _spec(p)
    return out


def _spec(p: PacketDef) -> DecodedSpec:
    return DecodedSpec(
        apid=p.apid,
        name=p.name,
        table="tm_" + p.name.lower(),
        numeric=tuple(f.name for f in p.fields if f.is_numeric),
        texts=tuple(f.name for f in p.fields if not f.is_numeric),
        samples=p.samples is not None,
    )


class Transaction(abc.ABC):
    """One archive transaction (see Archive.transaction); everything commits at once."""

    def __init__(self, archive: Archive) -> None:
        self.a = archive
        self.db = archive.db
        #: after append_many: per item, packets that collided with an archived key (other
        #: bytes) and went to the collisions table; their fresh mask entry is False
        self.collisions: list[int] = []
        #: gaps this transaction opened (ground/archive/_gaps.py; reported once settled)
        self.opened_gaps: list[_gaps.Opened] = []

    def append_packets(self, site: str, node: str, result: ParseResult, payload: bytes, received: float,
                       known_fresh: np.ndarray | None = None) -> np.ndarray:
        """Append the accepted packets of one container; returns the mask of fresh ones.

        A packet whose key (node, APID, ticks, seq, CRC) is already archived with the same
        bytes is a duplicate: it is not stored again and its mask entry is False.  Same key,
        other bytes: stored in ``collisions`` (mask False, counted in ``self.collisions``).
        ``known_fresh`` lets the caller pre-filter packets it already knows are duplicates
        (False entries are skipped).
        """
        return self.append_many([(site, node, result, payload, received, known_fresh)])[0]

    def _account_gaps(self, items: Sequence[tuple[str, str, ParseResult, bytes, float, np.ndarray | None]],
                      masks: Sequence[np.ndarray], nids: Sequence[int]) -> None:
        """Sequence-gap accounting of what this transaction archives fresh (ground/archive/_gaps.py)."""
        groups = _gaps.groups_of(items, masks, nids)
        if groups:
            self.opened_gaps += _gaps.account(self, groups, now(), self.a.gap_settle_s)

    @abc.abstractmethod
    def append_many(self, items: Sequence[tuple[str, str, ParseResult, bytes, float, np.ndarray | None]]
                    ) -> list[np.ndarray]:
        """append_packets for many containers at once (fewer statements); one fresh mask each."""

    def append_status(self, site: str, node: str, status: dict[str, Any], received: float) -> None:
        """Append one status message (birth, sleep announcement, last will)."""
        p = self.a._ph
        self.db.execute(f"INSERT INTO status VALUES ({p}, {p}, {p}, {p})",
                        (self.a.node_id(site, node), received, str(status.get("state", "")),
                         json.dumps(status, sort_keys=True)))

    def append_quarantine(self, received: float, topic: str, reason: str, size: int, detail: str,
                          sample: bytes) -> None:
        """Keep one message ingest could not accept (the caller bounds ``sample`` and ``detail``)."""
        p = self.a._ph
        self.db.execute(f"INSERT INTO quarantine VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                        (received, _printable(topic, 256), _printable(reason, 64), int(size),
                         _printable(detail, 512), bytes(sample)))

    @abc.abstractmethod
    def _decoded(self, nid: int, result: ParseResult, fresh: np.ndarray, received: float) -> None:
        """Store the decoded segments of the fresh packets (used by rebuild)."""


def _printable(s: str, limit: int) -> str:
    """``s`` cut to ``limit`` characters, control characters and lone surrogates escaped.

    Topics and error texts come from outside: PostgreSQL refuses NUL in text, and a lone
    surrogate cannot be encoded at all.
    """
    s = s[:limit]
    if s.isprintable() and s.isascii():
        return s
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else repr(c)[1:-1]
                   for c in s)[:limit * 4]


class Archive(abc.ABC):
    """Raw packet log + decoded parameter tables + status history.

    Use ``with archive.transaction() as tx: tx.append_packets(...)``; the commit happens
    when the block exits.  Queries take time ranges as Unix seconds on the packet time
    tag (``t0 <= t < t1``); None means unbounded.
    """

    url: str
    db: Any  # the backend's DB-API connection
    _lock: threading.RLock

    def __init__(self, dictionary: Dictionary | None = None) -> None:
        self.dictionary = dictionary or load()
        self.specs = decoded_specs(self.dictionary)
        self._node_ids: dict[tuple[str, str], int] = {}
        self._node_names: dict[int, tuple[str, str]] = {}
        self._seq_known: set[tuple[int, int]] = set()  # seqstate rows known to exist
        #: seconds a gap must stay open before it is reported (reordering between workers)
        self.gap_settle_s = _gaps.SETTLE_S

    #: the backend takes per-node advisory locks for gap accounting (PostgreSQL); SQLite has one writer
    _row_locks = False

    # -- writing -------------------------------------------------------------------
    @abc.abstractmethod
    def transaction(self) -> Any:
        """A context manager yielding a Transaction; commits on success, rolls back on error."""

    @abc.abstractmethod
    def node_id(self, site: str, node: str) -> int:
        """The archive's id of (site, node), created on first use."""

    # -- reading -------------------------------------------------------------------
    def _select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read query (backend placeholders already substituted)."""
        with self._lock:
            return self.db.execute(sql, tuple(params)).fetchall()

    @property
    @abc.abstractmethod
    def _ph(self) -> str:
        """The parameter placeholder of the backend ('?' or '%s')."""

    def nodes(self) -> list[tuple[str, str]]:
        """Every (site, node) seen so far."""
        return [(s, n) for _i, s, n in self._select("SELECT id, site, node FROM nodes ORDER BY id", ())]

    def _node_filter(self, site: str | None, node: str | None, where: list[str], params: list[Any]) -> bool:
        if node is None and site is None:
            return True
        ids = [i for i, s, n in self._select("SELECT id, site, node FROM nodes", ())
               if (node is None or n == node) and (site is None or s == site)]
        if not ids:
            return False
        where.append("node_id IN (" + ",".join(str(int(i)) for i in ids) + ")")
        return True

    def _range_filter(self, column: str, lo: Any, hi: Any, where: list[str], params: list[Any]) -> None:
        # lo <= column < hi; None is unbounded
        if lo is not None:
            where.append(f"{column} >= {self._ph}")
            params.append(lo)
        if hi is not None:
            where.append(f"{column} < {self._ph}")
            params.append(hi)

    def _time_filter(self, t0: float | None, t1: float | None, where: list[str], params: list[Any],
                     lo_col: str = "ticks", hi_col: str = "ticks") -> None:
        """Rows whose corrected time may fall in [t0, t1): node-time windows, OR-ed.

        Coarse: the exact test happens after correction (``correct_ticks``)."""
        if t0 is None and t1 is None:
            return
        lo = None if t0 is None else unix_to_ticks(t0)
        hi = None if t1 is None else unix_to_ticks(t1)
        wins: list[tuple[int | None, int | None]] = [(lo, hi)]
        for ranges in self.time_corrections().values():
            for r in ranges:
                a = r.lo if lo is None else max(r.lo, lo - r.corr)
                b = r.hi if hi is None else min(r.hi, hi - r.corr)
                if a < b:
                    wins.append((a, None if b >= OPEN_END else b))
        ors = []
        for a, b in wins:
            cond = []
            if a is not None:
                cond.append(f"{hi_col} >= {self._ph}")
                params.append(a)
            if b is not None:
                cond.append(f"{lo_col} < {self._ph}")
                params.append(b)
            ors.append("(" + " AND ".join(cond) + ")")
        where.append("(" + " OR ".join(ors) + ")")

    # -- time corrections ----------------------------------------------------------
    def time_corrections(self) -> dict[int, list[TimeCorrection]]:
        """Every node's correction ranges by archive node id (re-read: tiny, shared)."""
        out: dict[int, list[TimeCorrection]] = {}
        for nid, lo, hi, corr, q, boot, upd in self._select(
                "SELECT node_id, lo, hi, corr, quality, boot, updated FROM timecorr ORDER BY node_id, lo", ()):
            out.setdefault(int(nid), []).append(TimeCorrection(int(lo), int(hi), int(corr), int(q), int(boot),
                                                               float(upd)))
        return out

    def node_time_corrections(self, site: str, node: str) -> list[TimeCorrection]:
        """One node's correction ranges, oldest first."""
        with self._lock:
            nid = self.node_id(site, node)
        return self.time_corrections().get(nid, [])

    def set_time_correction(self, site: str, node: str, c: TimeCorrection) -> None:
        """Insert or replace the correction range of ``node`` starting at ``c.lo``."""
        p = self._ph
        with self.transaction():
            nid = self.node_id(site, node)
            self.db.execute(f"DELETE FROM timecorr WHERE node_id = {p} AND lo = {p}", (nid, c.lo))
            self.db.execute(f"INSERT INTO timecorr VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                            (nid, c.lo, min(c.hi, OPEN_END), c.corr, c.quality, c.boot, c.updated or now()))

    # -- sequence gaps (ground/archive/_gaps.py) -------------------------------------
    def gaps(self, site: str | None = None, node: str | None = None, states: Sequence[str] | None = None,
             apid: int | None = None, limit: int = 1000, now_: float | None = None) -> list[dict[str, Any]]:
        """Reported gaps, newest first: open ones only once older than ``gap_settle_s``."""
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return []
        p = self._ph
        if states is not None:
            bad = [s for s in states if s not in _gaps.GAP_STATES]
            if bad:
                raise ValueError(f"unknown gap state {bad[0]!r} (states: {', '.join(_gaps.GAP_STATES)})")
            if not states:
                return []
            where.append("state IN (" + ",".join([p] * len(states)) + ")")
            params += list(states)
        if apid is not None:
            where.append(f"apid = {p}")
            params.append(int(apid))
        t = (now_ if now_ is not None else now()) - self.gap_settle_s
        where.append(f"(state <> {p} OR detected <= {p})")
        params += [_gaps.OPEN, t]
        sql = (f"SELECT {', '.join(_gaps.GAP_COLUMNS)} FROM gaps WHERE " + " AND ".join(where)
               + f" ORDER BY id DESC LIMIT {max(0, int(limit))}")
        rows = self._select(sql, params)
        names = self._names() if rows else {}
        return [_gaps.gap_row(r, names) for r in rows]

    def gap_summary(self, site: str | None = None, now_: float | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """Per (site, node): {"gaps": reported gaps, "missing": packets still missing, "lost":
        packets lost for good, "states": {state: gaps}}."""
        p = self._ph
        t = (now_ if now_ is not None else now()) - self.gap_settle_s
        rows = self._select(f"SELECT node_id, state, COUNT(*), SUM(missing) FROM gaps WHERE (state <> {p} OR"
                            f" detected <= {p}) GROUP BY node_id, state", (_gaps.OPEN, t))
        names = self._names() if rows else {}
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for nid, state, n, missing in rows:
            key = names.get(int(nid), ("?", "?"))
            if site is not None and key[0] != site:
                continue
            d = out.setdefault(key, {"gaps": 0, "missing": 0, "lost": 0, "states": dict.fromkeys(_gaps.GAP_STATES, 0)})
            d["states"][str(state)] = int(n)
            d["gaps"] += int(n)
            if state != _gaps.FILLED:
                d["missing"] += int(missing or 0)
            if state == _gaps.LOST:
                d["lost"] += int(missing or 0)
        return out

    def update_gap(self, gap_id: int, *, state: str | None = None, request: float | None = None,
                   node_dropped: int | None = None, reason: str | None = None) -> None:
        """The refiller's side of a gap: its state, a REPLAY request made at ``request``, why.

        A gap ingest filled meanwhile stays filled (its state is never set back)."""
        if state is not None and state not in _gaps.GAP_STATES:
            raise ValueError(f"unknown gap state {state!r}")
        p = self._ph
        sets = [f"updated = {p}"]
        params: list[Any] = [now()]
        if state is not None:
            sets.append(f"state = {p}")
            params.append(state)
        if request is not None:
            sets += ["requests = requests + 1", f"last_request = {p}"]
            params.append(request)
        if node_dropped is not None:
            sets.append(f"node_dropped = {p}")
            params.append(int(node_dropped))
        if reason is not None:
            sets.append(f"reason = {p}")
            params.append(_printable(reason, 300))
        with self.transaction():
            self.db.execute(f"UPDATE gaps SET {', '.join(sets)} WHERE id = {p} AND state <> {p}",
                            (*params, int(gap_id), _gaps.FILLED))

    def gap_archived_seqs(self, gap: dict[str, Any]) -> set[int]:
        """Sequence counts of a gap already archived (its tag range, its counts)."""
        p = self._ph
        with self._lock:
            nid = self.node_id(gap["site"], gap["node"])
        first, count = int(gap["first"]), int(gap["count"])
        rows = self._select(f"SELECT seq FROM raw WHERE node_id = {p} AND apid = {p} AND ticks >= {p} AND ticks <= {p}",
                            (nid, int(gap["apid"]), int(gap["t_lo"]), int(gap["t_hi"])))
        return {int(s) for (s,) in rows if (int(s) - first) % _gaps.SEQ_MOD < count}

    def bytes_since(self, site: str, node: str, ticks: int) -> int:
        """Bytes of the packets of ``node`` archived with a time tag after ``ticks`` (every APID)."""
        p = self._ph
        with self._lock:
            nid = self.node_id(site, node)
        apids = ",".join(str(int(a)) for a in sorted(self.specs))
        r = self._select(f"SELECT SUM(length(data)) FROM raw WHERE node_id = {p} AND apid IN ({apids})"
                         f" AND ticks > {p}", (nid, int(ticks)))
        return int(r[0][0] or 0) if r else 0

    # -- collisions ----------------------------------------------------------------
    def collisions(self, node: str | None = None, site: str | None = None) -> list[tuple[RawPacket, str]]:
        """Packets kept because their key matched an archived packet with other bytes."""
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return []
        sql = "SELECT node_id, apid, seq, ticks, received, data, reason FROM collisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        names = self._names()
        rows = self._select(sql + " ORDER BY received, ticks", params)
        return [(RawPacket(*names[r[0]], int(r[1]), int(r[2]), int(r[3]), float(r[4]), bytes(r[5]),
                           float(ticks_to_unix(int(r[3])))), str(r[6])) for r in rows]

    def count_collisions(self) -> dict[str, int]:
        """Collisions kept, by reason."""
        return {str(r): int(n) for r, n in self._select("SELECT reason, COUNT(*) FROM collisions GROUP BY reason", ())}

    def _received_filter(self, t0: float | None, t1: float | None, where: list[str], params: list[Any]) -> None:
        self._range_filter("received", None if t0 is None else float(t0), None if t1 is None else float(t1),
                           where, params)

    def _names(self) -> dict[int, tuple[str, str]]:
        # re-read each time: another writer (shared-subscription worker) may add nodes
        self._node_names = {i: (s, n) for i, s, n in self._select("SELECT id, site, node FROM nodes", ())}
        return self._node_names

    def raw_packets(self, node: str | None = None, apid: int | None = None, t0: float | None = None,
                    t1: float | None = None, site: str | None = None, by_received: bool = False,
                    limit: int | None = None) -> list[RawPacket]:
        """Archived packets, ordered by time tag (or by reception time when by_received).

        With by_received the time range applies to the reception time (Unix seconds).
        """
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return []
        if apid is not None:
            where.append(f"apid = {self._ph}")
            params.append(int(apid))
        if by_received:
            self._received_filter(t0, t1, where, params)
        else:
            self._time_filter(t0, t1, where, params)
        sql = "SELECT node_id, apid, seq, ticks, received, data FROM raw"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received, node_id, apid, ticks, seq" if by_received else " ORDER BY ticks, node_id, apid, seq"
        corr = self.time_corrections()
        exact = not by_received and (t0 is not None or t1 is not None) and corr
        if limit is not None and not exact:
            sql += f" LIMIT {int(limit)}"
        names = self._names()
        rows = self._select(sql, params)
        out = []
        for r in rows:
            nid, ticks = int(r[0]), int(r[3])
            t, q = (correct_ticks(np.array([ticks], np.int64), corr[nid]) if nid in corr
                    else (np.array([ticks]), np.zeros(1, np.int8)))
            out.append(RawPacket(*names[nid], int(r[1]), int(r[2]), ticks, float(r[4]), bytes(r[5]),
                                 float(ticks_to_unix(int(t[0]))), TIME_QUALITY.get(int(q[0]), "?")))
        if exact:
            lo = -np.inf if t0 is None else unix_to_ticks(t0)
            hi = np.inf if t1 is None else unix_to_ticks(t1)
            out = [p for p in out if lo <= unix_to_ticks(p.time) < hi]
            out.sort(key=lambda p: (p.time, p.apid, p.seq))
            if limit is not None:
                out = out[:int(limit)]
        return out

    def packet_keys(self, node: str | None = None, site: str | None = None) -> set[tuple[int, int, int]]:
        """(APID, sequence count, time tag ticks) of every archived packet (e.g. to check what
        reached the archive against what a node produced)."""
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return set()
        sql = "SELECT apid, seq, ticks FROM raw" + (" WHERE " + " AND ".join(where) if where else "")
        return {(int(a), int(s), int(t)) for a, s, t in self._select(sql, params)}

    def count_raw(self, node: str | None = None, apid: int | None = None, site: str | None = None) -> int:
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return 0
        if apid is not None:
            where.append(f"apid = {self._ph}")
            params.append(int(apid))
        sql = "SELECT COUNT(*) FROM raw" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._select(sql, params)[0][0])

    def spec(self, packet: int | str) -> DecodedSpec:
        p = self.dictionary.packet(packet)
        return self.specs[p.apid]

    def table(self, packet: int | str, node: str | None = None, t0: float | None = None,
              t1: float | None = None, site: str | None = None,
              columns: Sequence[str] | None = None) -> dict[str, Any]:
        """Decoded rows of one packet type as columns, ordered by time tag.

        Returns {"site": [...], "node": [...], "time": float64 Unix s (corrected),
        "ticks" (the node's time tag), "time_quality": list[str], "seq",
        "received", <field>: float64 array ..., <text field>: list[str],
        "samples": int16 (n, count, axes) raw counts for sample packets}.
        """
        spec = self.spec(packet)
        want = list(columns) if columns is not None else list(spec.numeric + spec.texts) + (
            ["samples"] if spec.samples else [])
        for c in want:
            if c not in spec.columns[4:]:
                raise KeyError(f"packet {spec.name} has no column {c!r} (has {', '.join(spec.columns[4:])})")
        where: list[str] = []
        params: list[Any] = []
        rows: list[tuple[Any, ...]] = []
        lo = unix_to_ticks(t0) if t0 is not None else None
        hi = unix_to_ticks(t1) if t1 is not None else None
        if self._node_filter(site, node, where, params):
            self._time_filter(t0, t1, where, params, lo_col="t0", hi_col="t1")
            sql = f"SELECT node_id, n, received, ticks, seq, vals, texts, samples FROM {spec.table}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = self._select(sql, params)
        p = self.dictionary.packet(spec.apid)
        m = len(spec.numeric)
        ns = [int(r[1]) for r in rows]
        nid = np.repeat(np.array([r[0] for r in rows], dtype=np.int64), ns)
        ticks = np.concatenate([np.frombuffer(bytes(r[3]), "<i8") for r in rows]) if rows else np.zeros(0, np.int64)
        seq = np.concatenate([np.frombuffer(bytes(r[4]), "<u2") for r in rows]).astype(np.int64) if rows else \
            np.zeros(0, np.int64)
        rec = np.repeat(np.array([r[2] for r in rows], dtype=np.float64), ns)
        vals = (np.concatenate([np.frombuffer(bytes(r[5]), "<f8").reshape(-1, m) for r in rows]) if rows
                else np.zeros((0, m)))
        cticks = ticks.astype(np.int64, copy=True)
        quality = np.zeros(len(ticks), np.int8)
        corr = self.time_corrections()
        for i, ranges in corr.items():
            m = nid == i
            if m.any():
                cticks[m], quality[m] = correct_ticks(ticks[m], ranges)
        keep = np.ones(len(ticks), dtype=bool)
        if lo is not None:
            keep &= cticks >= lo
        if hi is not None:
            keep &= cticks < hi
        order = np.nonzero(keep)[0]
        order = order[np.lexsort((seq[order], nid[order], cticks[order]))]
        names = self._names()
        out: dict[str, Any] = {}
        ids = nid[order].tolist()
        out["site"] = [names[i][0] for i in ids]
        out["node"] = [names[i][1] for i in ids]
        out["ticks"] = ticks[order].copy()  # the node's own time tag, as archived
        out["time"] = ticks_to_unix(cticks[order]).astype(np.float64)  # corrected
        qn = np.array([TIME_QUALITY[k] for k in sorted(TIME_QUALITY)], dtype=object)
        out["time_quality"] = qn[quality[order]].tolist()
        out["seq"] = seq[order]
        out["received"] = rec[order]
        for c in want:
            if c == "samples":
                s = p.samples
                assert s is not None
                blobs = [np.frombuffer(bytes(r[7]), "<i2").reshape(-1, s.count, len(s.axes)) for r in rows]
                allv = np.concatenate(blobs) if blobs else np.zeros((0, s.count, len(s.axes)), np.int16)
                out[c] = allv[order].astype(np.int16)
            elif c in spec.texts:
                k = spec.texts.index(c)
                allt: list[str] = []
                for r in rows:
                    allt += json.loads(r[6])[k]
                out[c] = [allt[i] for i in order.tolist()]
            else:
                out[c] = vals[order, spec.numeric.index(c)].copy()
        return out

    def parameter(self, name: str, node: str | None = None, t0: float | None = None,
                  t1: float | None = None, site: str | None = None) -> dict[str, Any]:
        """One parameter over time: name is "PACKET.field" (e.g. "HK.free_heap") or a field
        name unique in the dictionary.  Returns {"node", "time", "value", "time_quality"}."""
        packet, field = self.resolve(name)
        t = self.table(packet, node, t0, t1, site, columns=[field])
        return {"site": t["site"], "node": t["node"], "time": t["time"], "value": t[field],
                "time_quality": t["time_quality"]}

    def parameter_decimated(self, name: str, node: str | None, t0: float, t1: float, max_points: int = 1000,
                            site: str | None = None) -> dict[str, Any]:
        """At most ``max_points`` of one parameter over [t0, t1), thinned in the database.

        When the range holds more points than that, the range is cut into ``max_points``
        equal time buckets and, per bucket, one index seek finds its earliest segment, of
        which the database returns the first sample (two ``substr``s of the segment blobs).
        Every statement is bounded (``max_points`` seeks, a capped count), so a query over
        months costs about what one over an hour does and never holds the archive long
        (ingest commits wait for the same lock).  Returns {"time", "value", "count",
        "exact", "time_quality"}: ``count`` is the number of samples in the range, estimated (``exact``
        False) when the range was thinned.
        """
        packet, field = self.resolve(name)
        spec = self.spec(packet)
        j = spec.numeric.index(field)
        lo, hi = unix_to_ticks(t0), unix_to_ticks(t1)
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params) or hi <= lo:
            return {"time": [], "value": [], "count": 0, "exact": True}
        ids = [int(x) for x in where[0][len("node_id IN ("):-1].split(",")] if where else \
            [i for i, _s, _n in self._select("SELECT id, site, node FROM nodes", ())]
        tab, ph = spec.table, self._ph
        # small enough to read whole? (a probe of at most max_points + 1 segments)
        probe = self._select(f"SELECT n FROM {tab} WHERE {where[0] if where else '1=1'} AND t1 >= {ph} AND t0 < {ph}"
                             f" LIMIT {int(max_points) + 1}", [*params, lo, hi])
        if len(probe) <= max_points and sum(int(r[0]) for r in probe) <= max_points:
            r = self.parameter(name, node, t0, t1, site)
            return {"time": r["time"].tolist(), "value": r["value"].tolist(), "count": len(r["time"]), "exact": True,
                    "time_quality": r["time_quality"]}
        width = max(1, -(-(hi - lo) // max(1, max_points)))
        nb = -(-(hi - lo) // width)
        ticks_l: list[np.ndarray] = []
        vals_l: list[np.ndarray] = []
        nid_l: list[np.ndarray] = []
        nseg = 0.0
        ns: list[int] = []
        for nid in ids:
            first = self._select(
                f"WITH RECURSIVE b(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM b WHERE k + 1 < {int(nb)})"
                f" SELECT (SELECT t1 FROM {tab} WHERE node_id = {nid} AND t1 >= {int(lo)} + k * {int(width)}"
                f" AND t1 < {int(lo)} + (k + 1) * {int(width)} ORDER BY t1 LIMIT 1) FROM b", ())
            t1s = [int(r[0]) for r in first if r[0] is not None]
            if not t1s:
                continue
            rows = self._select(
                f"SELECT {self._substr('ticks', 1, 8)}, {self._substr('vals', j * 8 + 1, 8)}, n FROM {tab}"
                f" WHERE node_id = {nid} AND t1 IN ({','.join(map(str, t1s))}) ORDER BY t1", ())
            ticks_l.append(np.frombuffer(b"".join(bytes(r[0]) for r in rows), "<i8").astype(np.int64))
            vals_l.append(np.frombuffer(b"".join(bytes(r[1]) for r in rows), "<f8"))
            nid_l.append(np.full(len(rows), nid, dtype=np.int64))
            ns += [int(r[2]) for r in rows]
            nseg += self._count_segments(tab, nid, lo, hi)
        if not ticks_l:
            return {"time": [], "value": [], "count": 0, "exact": True}
        ticks, vals, nids = np.concatenate(ticks_l), np.concatenate(vals_l), np.concatenate(nid_l)
        keep = (ticks >= lo) & (ticks < hi)  # buckets by the node's own time tags; times corrected below
        quality = np.zeros(len(ticks), np.int8)
        for i, ranges in self.time_corrections().items():
            m = nids == i
            if m.any():
                ticks[m], quality[m] = correct_ticks(ticks[m], ranges)
        order = np.argsort(ticks[keep], kind="stable")
        ticks, vals = ticks[keep][order][:max_points], vals[keep][order][:max_points]
        quality = quality[keep][order][:max_points]
        count = int(round(nseg * (sum(ns) / len(ns)))) if ns else 0
        return {"time": ticks_to_unix(ticks).astype(np.float64).tolist(), "value": vals.tolist(), "count": count,
                "exact": False, "time_quality": [TIME_QUALITY.get(int(q), "?") for q in quality.tolist()]}

    #: segments counted exactly up to this many per node; beyond, extrapolated over time
    COUNT_CAP = 100_000

    def _count_segments(self, tab: str, nid: int, lo: int, hi: int) -> float:
        """Segments of node ``nid`` with t1 in [lo, hi): an index-only count, capped, then extrapolated."""
        cap = self.COUNT_CAP
        n = int(self._select(f"SELECT COUNT(*) FROM (SELECT 1 FROM {tab} WHERE node_id = {nid} AND t1 >= {int(lo)}"
                             f" AND t1 < {int(hi)} LIMIT {cap}) c", ())[0][0])
        if n < cap:
            return float(n)
        last = self._select(f"SELECT t1 FROM {tab} WHERE node_id = {nid} AND t1 >= {int(lo)} ORDER BY t1"
                            f" LIMIT 1 OFFSET {cap - 1}", ())
        span = (int(last[0][0]) - lo) if last else 0
        return cap * (hi - lo) / span if span > 0 else float(cap)

    def _substr(self, column: str, start: int, length: int) -> str:
        """SQL for bytes [start, start + length) of a blob column (1-based, both backends)."""
        return f"substr({column}, {int(start)}, {int(length)})"

    def latest_raw(self, node: str, limit: int, site: str | None = None) -> list[RawPacket]:
        """The ``limit`` packets of ``node`` received last, newest last (an index walk, not a range load)."""
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return []
        sql = ("SELECT node_id, apid, seq, ticks, received, data FROM raw"
               + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY received DESC, node_id DESC, apid DESC, ticks DESC, seq DESC LIMIT {max(0, int(limit))}")
        names = self._names()
        return [RawPacket(*names[r[0]], int(r[1]), int(r[2]), int(r[3]), float(r[4]), bytes(r[5]))
                for r in self._select(sql, params)][::-1]

    def resolve(self, name: str) -> tuple[str, str]:
        """("PACKET", "field") for "PACKET.field" or a field name unique in the dictionary."""
        if "." in name:
            pk, f = name.split(".", 1)
            spec = self.spec(pk.upper())
            if f not in spec.columns[4:]:
                raise KeyError(f"packet {spec.name} has no field {f!r}")
            return spec.name, f
        hits = [s.name for s in self.specs.values() if name in s.columns[4:]]
        if len(hits) != 1:
            raise KeyError(f"parameter {name!r} is in {hits or 'no packet'}: write PACKET.{name}")
        return hits[0], name

    def status_history(self, node: str | None = None, t0: float | None = None, t1: float | None = None,
                       site: str | None = None) -> list[dict[str, Any]]:
        """Status messages by reception time (Unix s): [{"site","node","received","state", **body}]."""
        where: list[str] = []
        params: list[Any] = []
        if not self._node_filter(site, node, where, params):
            return []
        self._received_filter(t0, t1, where, params)
        sql = "SELECT node_id, received, state, body FROM status"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received"
        names = self._names()
        out = []
        for nid, rec, state, body in self._select(sql, params):
            d: dict[str, Any] = {}
            try:
                d.update(json.loads(body))
            except ValueError:
                d["body"] = body
            d.update(site=names[nid][0], node=names[nid][1], received=float(rec), state=state)
            out.append(d)
        return out

    def count_quarantined(self) -> dict[str, int]:
        """Quarantined messages kept, by reason."""
        return {str(r): int(n) for r, n in self._select("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason", ())}

    def quarantined(self, limit: int = 100, reason: str | None = None) -> list[dict[str, Any]]:
        """The newest quarantined messages first: [{"received","topic","reason","size","detail","sample"}]."""
        p = self._ph
        sql = "SELECT received, topic, reason, size, detail, sample FROM quarantine"
        params: list[Any] = []
        if reason is not None:
            sql += f" WHERE reason = {p}"
            params.append(reason)
        sql += f" ORDER BY received DESC LIMIT {max(0, int(limit))}"
        return [{"received": float(r[0]), "topic": r[1], "reason": r[2], "size": int(r[3]), "detail": r[4],
                 "sample": bytes(r[5])} for r in self._select(sql, params)]

    # -- maintenance ---------------------------------------------------------------
    def retention(self, days: float, now_: float | None = None) -> int:
        """Delete packets and status received more than ``days`` ago; returns raw rows deleted."""
        cutoff = (now_ if now_ is not None else now()) - days * 86400.0
        p = self._ph
        with self.transaction():
            n = self.db.execute(f"DELETE FROM raw WHERE received < {p}", (cutoff,)).rowcount
            for spec in self.specs.values():
                self.db.execute(f"DELETE FROM {spec.table} WHERE received < {p}", (cutoff,))
            self.db.execute(f"DELETE FROM status WHERE received < {p}", (cutoff,))
            self.db.execute(f"DELETE FROM quarantine WHERE received < {p}", (cutoff,))
            self.db.execute(f"DELETE FROM gaps WHERE updated < {p} AND state IN ({p}, {p})",
                            (cutoff, _gaps.FILLED, _gaps.LOST))
        return int(n)

    def rebuild(self, batch: int = 5000) -> int:
        """Recreate every decoded table from the raw log; returns packets decoded."""
        self._truncate_decoded()
        parser = Parser(self.dictionary)
        n = 0
        last: tuple[Any, ...] | None = None
        while True:
            rows = self._raw_after(last, batch)
            if not rows:
                return n
            groups: dict[int, tuple[list[bytes], list[float]]] = {}
            for nid, _apid, _ticks, _seq, _crc, received, data in rows:
                g = groups.setdefault(nid, ([], []))
                g[0].append(bytes(data))
                g[1].append(float(received))
            with self.transaction() as tx:
                for nid, (datas, recs) in groups.items():
                    res = parser.parse(b"".join(datas))  # packets back to back: one segment per node
                    if res.count:
                        tx._decoded(nid, res, np.ones(res.count, bool), max(recs))
                        n += res.count
            r = rows[-1]
            last = (r[0], r[1], r[2], r[3], r[4])

    def _raw_after(self, key: tuple[Any, ...] | None, limit: int) -> list[tuple[Any, ...]]:
        p = self._ph
        sql = "SELECT node_id, apid, ticks, seq, crc, received, data FROM raw"
        params: list[Any] = []
        if key is not None:
            sql += f" WHERE (node_id, apid, ticks, seq, crc) > ({p}, {p}, {p}, {p}, {p})"
            params = list(key)
        sql += f" ORDER BY node_id, apid, ticks, seq, crc LIMIT {int(limit)}"
        return self._select(sql, params)

    @abc.abstractmethod
    def _truncate_decoded(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def now() -> float:
    return time.time()


def seed_seqstate(db: Any) -> None:
    """Schema v2 -> v3: the sequence state of every (node, APID) from its newest archived packet."""
    db.execute("INSERT INTO seqstate (node_id, apid, expected, last_ticks, late, resets, updated)"
               f" SELECT r.node_id, r.apid, MAX((r.seq + 1) % {_gaps.SEQ_MOD}), r.ticks, 0, 0, MAX(r.received)"
               " FROM raw r JOIN (SELECT node_id, apid, MAX(ticks) AS t FROM raw GROUP BY node_id, apid) m"
               " ON r.node_id = m.node_id AND r.apid = m.apid AND r.ticks = m.t GROUP BY r.node_id, r.apid, r.ticks")


def decoded_segment(spec: DecodedSpec, node_id: int, result: ParseResult, fresh: np.ndarray,
                    received: float) -> tuple[Any, ...] | None:
    """One segment row for spec.table from the fresh packets of one ParseResult, or None.

    A segment holds many packets of one node and APID column-wise (like the Yamcs
    parameter archive): node_id, t0, t1 (time-tag range), n, received, ticks (<i8 blob),
    seq (<u2 blob), vals (<f8 n x fields blob), texts (JSON per text field), samples
    (<i2 n x count x axes blob).  One INSERT per node and APID per batch instead of one
    per packet.
    """
    tab = result.tables.get(spec.apid)
    if tab is None or not len(tab):
        return None
    rows = tab.rows
    sel: np.ndarray | slice = slice(None)
    if not fresh.all():
        keep = fresh[rows]
        if not keep.any():
            return None
        sel = np.nonzero(keep)[0]
        rows = rows[sel]
    ticks = result.ticks[rows].astype("<i8")
    seq = result.seq[rows].astype("<u2")
    vals = np.ascontiguousarray(tab.values[sel], dtype="<f8")
    texts = None
    if spec.texts:
        idx = range(len(tab)) if isinstance(sel, slice) else sel.tolist()
        texts = json.dumps([[tab.texts[name][i].decode("ascii", "replace") for i in idx] for name in spec.texts])
    samples = None
    if spec.samples and tab.raw_samples is not None:
        samples = np.ascontiguousarray(tab.raw_samples[sel], dtype="<i2").tobytes()
    # per field the segment's min and max (NaN ignored; None when all are NaN)
    if len(vals) == 1:
        lo = hi = vals[0].tolist()
    else:
        lo, hi = np.fmin.reduce(vals, axis=0).tolist(), np.fmax.reduce(vals, axis=0).tolist()
    summary = [None if x != x else x for pair in zip(lo, hi, strict=True) for x in pair]
    return (node_id, int(ticks.min()), int(ticks.max()), len(ticks), received, ticks.tobytes(), seq.tobytes(),
            vals.tobytes(), texts, samples, *summary)

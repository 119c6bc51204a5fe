"""SQLite archive (the embedded default): WAL journal, one writer, many readers.

``synchronous=NORMAL`` in WAL mode: a committed transaction survives a crash of the
process (SIGKILL) because it is in the WAL file; ``durable=True`` selects
``synchronous=FULL``, which also survives power loss at the cost of an fsync per commit.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import numpy as np

from ground.archive._base import (
    KEY_COLLISION,
    SCHEMA_VERSION,
    Archive,
    DecodedSpec,
    Transaction,
    decoded_segment,
    packet_crcs,
    seed_seqstate,
)
from ground.errors import ArchiveError
from ground.parse import ParseResult
from wire.dictionary import Dictionary

log = logging.getLogger("lunabase.archive")


_RAW_SQL = ("CREATE TABLE IF NOT EXISTS {name} (node_id INTEGER NOT NULL, apid INTEGER NOT NULL,"
            " ticks INTEGER NOT NULL, seq INTEGER NOT NULL, crc INTEGER NOT NULL, received REAL NOT NULL,"
            " data BLOB NOT NULL, PRIMARY KEY (node_id, apid, ticks, seq, crc)) WITHOUT ROWID")


_SEQSTATE_SQL = ("CREATE TABLE IF NOT EXISTS seqstate (node_id INTEGER NOT NULL, apid INTEGER NOT NULL,"
                 " expected INTEGER NOT NULL, last_ticks INTEGER NOT NULL, late INTEGER NOT NULL,"
                 " resets INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (node_id, apid))")
_GAPS_SQL = ("CREATE TABLE IF NOT EXISTS gaps (id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL,"
             " apid INTEGER NOT NULL, first INTEGER NOT NULL, count INTEGER NOT NULL, missing INTEGER NOT NULL,"
             " t_lo INTEGER NOT NULL, t_hi INTEGER NOT NULL, detected REAL NOT NULL, updated REAL NOT NULL,"
             " state TEXT NOT NULL, requests INTEGER NOT NULL, last_request REAL, node_dropped INTEGER,"
             " reason TEXT NOT NULL)")


def _create_sql(spec: DecodedSpec) -> str:
    # decoded values in column-wise segments: see ground.archive._base.decoded_segment
    return (f"CREATE TABLE IF NOT EXISTS {spec.table} (node_id INTEGER NOT NULL, t0 INTEGER NOT NULL,"
            f" t1 INTEGER NOT NULL, n INTEGER NOT NULL, received REAL NOT NULL, ticks BLOB NOT NULL,"
            f" seq BLOB NOT NULL, vals BLOB NOT NULL, texts TEXT, samples BLOB"
            + "".join(f", {c} REAL" for c in spec.summary) + ")")


class SQLiteArchive(Archive):
    """The archive in one SQLite file (``sqlite:///path/to/archive.db``).

    ``connect`` opens the file (default ``sqlite3.connect``; the checkpoint thread opens
    its own connection with it too): the seam a test uses to make one of them fail.
    """

    db: sqlite3.Connection

    def __init__(self, path: str | Path, dictionary: Dictionary | None = None, durable: bool = False,
                 checkpoint_interval_s: float | None = 1.0,
                 connect: Callable[..., sqlite3.Connection] = sqlite3.connect) -> None:
        super().__init__(dictionary)
        self.migrated_from = 0  # schema version migrated from at open (0: none)
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connect = connect  # the seam to the database file (a test hands one that fails)
            self.db = connect(str(self.path), isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise ArchiveError(f"{self.url}: {e}") from None
        self._lock = threading.RLock()
        db = self.db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA cache_size=-65536")
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL,"
                   " UNIQUE (site, node))")
        cols = [r[1] for r in db.execute("PRAGMA table_info(raw)").fetchall()]
        had_seqstate = bool(db.execute("SELECT 1 FROM sqlite_master WHERE name = 'seqstate'").fetchall())
        if cols and "crc" not in cols:
            self.migrated_from = 1
            self._migrate_v1(db)
        elif cols and not had_seqstate:
            self.migrated_from = 2
        db.execute(_RAW_SQL.format(name="raw"))
        db.execute("CREATE INDEX IF NOT EXISTS raw_received ON raw (received)")
        db.execute("CREATE TABLE IF NOT EXISTS collisions (node_id INTEGER NOT NULL, apid INTEGER NOT NULL,"
                   " ticks INTEGER NOT NULL, seq INTEGER NOT NULL, crc INTEGER NOT NULL, received REAL NOT NULL,"
                   " data BLOB NOT NULL, reason TEXT NOT NULL, UNIQUE (node_id, apid, ticks, seq, crc, data))")
        db.execute("CREATE TABLE IF NOT EXISTS timecorr (node_id INTEGER NOT NULL, lo INTEGER NOT NULL,"
                   " hi INTEGER NOT NULL, corr INTEGER NOT NULL, quality INTEGER NOT NULL, boot INTEGER NOT NULL,"
                   " updated REAL NOT NULL, PRIMARY KEY (node_id, lo))")
        db.execute(_SEQSTATE_SQL)
        db.execute(_GAPS_SQL)
        db.execute("CREATE INDEX IF NOT EXISTS gaps_node ON gaps (node_id, apid, state)")
        if cols and not had_seqstate:
            seed_seqstate(db)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("CREATE TABLE IF NOT EXISTS status (node_id INTEGER NOT NULL, received REAL NOT NULL,"
                   " state TEXT, body TEXT NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS status_node ON status (node_id, received)")
        db.execute("CREATE TABLE IF NOT EXISTS quarantine (received REAL NOT NULL, topic TEXT NOT NULL,"
                   " reason TEXT NOT NULL, size INTEGER NOT NULL, detail TEXT NOT NULL, sample BLOB NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS quarantine_received ON quarantine (received)")
        for spec in self.specs.values():
            db.execute(_create_sql(spec))
            have = {r[1] for r in db.execute(f"PRAGMA table_info({spec.table})")}
            for c in spec.summary:  # an archive from before the min/max columns: NULL there (read whole)
                if c not in have:
                    db.execute(f"ALTER TABLE {spec.table} ADD COLUMN {c} REAL")
            db.execute(f"CREATE INDEX IF NOT EXISTS {spec.table}_received ON {spec.table} (received)")
            db.execute(f"CREATE INDEX IF NOT EXISTS {spec.table}_node_t1 ON {spec.table} (node_id, t1)")
        db.execute("COMMIT")
        self.checkpoint_errors = 0
        self._stop_ckpt = threading.Event()
        self._ckpt: threading.Thread | None = None
        if checkpoint_interval_s:
            # checkpoints (WAL -> database file, with fsync) move to a background thread so an
            # ingest commit never pays for one: that is what keeps the p99 latency low
            db.execute("PRAGMA wal_autocheckpoint=0")
            self._ckpt = threading.Thread(target=self._checkpointer, args=(checkpoint_interval_s,),
                                          name="sqlite-checkpoint", daemon=True)
            self._ckpt.start()
        self._insert_sql = {
            spec.apid: f"INSERT INTO {spec.table} ({', '.join(spec.segment_columns)})"
                       f" VALUES ({','.join('?' * len(spec.segment_columns))})"
            for spec in self.specs.values()
        }

    @property
    def _ph(self) -> str:
        return "?"

    @staticmethod
    def _migrate_v1(db: sqlite3.Connection) -> None:
        # v1 keyed raw on (node_id, apid, ticks, seq); a WITHOUT ROWID table's key cannot be
        # altered, so copy into the v2 table (crc = the packet's last two bytes) and swap
        log.warning("archive schema v1 -> v%d: adding the CRC to the raw key (one pass over raw)", SCHEMA_VERSION)
        db.create_function("lb_crc", 1, lambda d: (d[-2] << 8) | d[-1] if d and len(d) >= 2 else 0,
                           deterministic=True)
        db.execute(_RAW_SQL.format(name="raw_v2"))
        db.execute("INSERT INTO raw_v2 (node_id, apid, ticks, seq, crc, received, data)"
                   " SELECT node_id, apid, ticks, seq, lb_crc(data), received, data FROM raw")
        db.execute("DROP TABLE raw")
        db.execute("ALTER TABLE raw_v2 RENAME TO raw")

    def node_id(self, site: str, node: str) -> int:
        key = (site, node)
        nid = self._node_ids.get(key)
        if nid is None:
            self.db.execute("INSERT OR IGNORE INTO nodes (site, node) VALUES (?, ?)", key)
            nid = self.db.execute("SELECT id FROM nodes WHERE site = ? AND node = ?", key).fetchone()[0]
            self._node_ids[key] = nid
        return nid

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_SQLiteTx]:
        with self._lock:
            self.db.execute("BEGIN")
            try:
                yield _SQLiteTx(self)
            except BaseException:
                self.db.execute("ROLLBACK")
                self._node_ids.clear()  # ids created in the rolled-back transaction are gone
                self._seq_known.clear()
                raise
            self.db.execute("COMMIT")

    def _truncate_decoded(self) -> None:
        with self.transaction():
            for spec in self.specs.values():
                self.db.execute(f"DELETE FROM {spec.table}")

    def _checkpointer(self, interval: float) -> None:
        try:
            c = self._connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            # without this thread nothing would ever checkpoint (autocheckpoint is off): the
            # WAL would grow without bound, so hand checkpoints back to SQLite
            log.error("%s: checkpoint thread cannot connect (%s); using SQLite's autocheckpoint", self.url, e)
            with self._lock:
                self.db.execute("PRAGMA wal_autocheckpoint=1000")
            return
        with contextlib.closing(c):
            c.execute("PRAGMA busy_timeout=1000")
            while not self._stop_ckpt.wait(interval):
                try:
                    c.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as e:  # busy under a long reader: the next round catches up
                    self.checkpoint_errors += 1
                    log.debug("%s: checkpoint: %s (%d so far)", self.url, e, self.checkpoint_errors)

    def close(self) -> None:
        self._stop_ckpt.set()
        if self._ckpt is not None:
            self._ckpt.join(5)
        with contextlib.suppress(sqlite3.Error):
            self.db.close()


_RAW_COLS = "INSERT OR IGNORE INTO raw (node_id, apid, ticks, seq, crc, received, data) VALUES "
_ROWS_PER_INSERT = 64  # 448 parameters: under SQLite's oldest limit of 999 per statement
_RAW_MULTI = _RAW_COLS + ",".join(["(?,?,?,?,?,?,?)"] * _ROWS_PER_INSERT)


def _insert_raw(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """INSERT OR IGNORE raw rows, 64 per statement; returns how many were inserted.

    One statement per row spends about a third of the insert's time stepping the
    statement and crossing into SQLite per row (measured: 3.4-3.9 -> 2.4-2.5 us per row
    with the raw_received index, docs/ground-data.md).
    """
    k = _ROWS_PER_INSERT
    full = len(rows) // k * k
    n = 0
    if full:
        flat = list(chain.from_iterable(rows[:full]))
        w = 7 * k
        n += db.executemany(_RAW_MULTI, [flat[i:i + w] for i in range(0, len(flat), w)]).rowcount
    if full < len(rows):
        n += db.executemany(_RAW_COLS + "(?,?,?,?,?,?,?)", rows[full:]).rowcount
    return n


class _SQLiteTx(Transaction):
    a: SQLiteArchive
    db: sqlite3.Connection

    def append_many(self, items: Sequence[tuple[str, str, ParseResult, bytes, float, np.ndarray | None]]
                    ) -> list[np.ndarray]:
        rows: list[tuple[Any, ...]] = []
        spans: list[tuple[int, np.ndarray, list[int] | range]] = []  # per item: (item, mask, indices inserted)
        masks: list[np.ndarray] = []
        nids: list[int] = []
        self.collisions = [0] * len(items)
        for j, (site, node, result, payload, received, known) in enumerate(items):
            n = result.count
            fresh = np.ones(n, dtype=bool) if known is None else known.copy()
            masks.append(fresh)
            nid = self.a.node_id(site, node)
            nids.append(nid)
            if n == 0:
                continue
            mv = memoryview(payload)
            crc = packet_crcs(result, payload)
            if known is None:
                idx: list[int] | range = range(n)
                offs, lens = result.offset.tolist(), result.length.tolist()
                rows.extend(zip(repeat(nid), result.apid.tolist(), result.ticks.tolist(), result.seq.tolist(),
                                crc.tolist(), repeat(received), [mv[o:o + ln] for o, ln in zip(offs, lens, strict=False)]))
            else:
                idx = np.nonzero(fresh)[0].tolist()
                offs, lens = result.offset[idx].tolist(), result.length[idx].tolist()
                rows.extend(zip(repeat(nid), result.apid[idx].tolist(), result.ticks[idx].tolist(),
                                result.seq[idx].tolist(), crc[idx].tolist(), repeat(received),
                                [mv[o:o + ln] for o, ln in zip(offs, lens, strict=False)]))
            spans.append((j, fresh, idx))
        if rows:
            sql = "INSERT OR IGNORE INTO raw (node_id, apid, ticks, seq, crc, received, data) VALUES (?,?,?,?,?,?,?)"
            db = self.db
            db.execute("SAVEPOINT pk")
            if _insert_raw(db, rows) != len(rows):
                # some keys are already archived (redelivery after a restart): find which, one
                # by one, and tell a true duplicate (same bytes) from a collision (other bytes)
                db.execute("ROLLBACK TO pk")
                it = iter(rows)
                for j, mask, idx in spans:
                    for k in idx:
                        row = next(it)
                        if db.execute(sql, row).rowcount == 0:
                            mask[k] = False
                            have = db.execute("SELECT data FROM raw WHERE node_id = ? AND apid = ? AND ticks = ?"
                                              " AND seq = ? AND crc = ?", row[:5]).fetchone()
                            if have is not None and bytes(have[0]) != bytes(row[6]):
                                db.execute("INSERT OR IGNORE INTO collisions VALUES (?,?,?,?,?,?,?,?)",
                                           (*row, KEY_COLLISION))
                                self.collisions[j] += 1
            db.execute("RELEASE pk")
        by_apid: dict[int, list[tuple[Any, ...]]] = {}
        for (_site, _node, result, _payload, received, _k), fresh, nid in zip(items, masks, nids, strict=False):
            for apid_ in result.tables:
                spec = self.a.specs.get(apid_)
                if spec is not None:
                    seg = decoded_segment(spec, nid, result, fresh, received)
                    if seg is not None:
                        by_apid.setdefault(apid_, []).append(seg)
        for apid_, drows in by_apid.items():
            if drows:
                self.db.executemany(self.a._insert_sql[apid_], drows)
        self._account_gaps(items, masks, nids)
        return masks

    def _decoded(self, nid: int, result: ParseResult, fresh: np.ndarray, received: float) -> None:
        for apid_ in result.tables:
            spec = self.a.specs.get(apid_)
            seg = decoded_segment(spec, nid, result, fresh, received) if spec else None
            if seg is not None:
                self.db.execute(self.a._insert_sql[apid_], seg)

"""PostgreSQL archive (psycopg 3): the backend for scale-out.

Several ingest workers (MQTT shared subscription) can write into one database: the
primary key (node_id, apid, ticks, seq, crc) and ``ON CONFLICT DO NOTHING`` keep it free of
duplicates whichever worker gets a redelivery, and the sequence-gap accounting lives in
the database too (a per-node advisory lock while a batch commits:
ground/archive/_gaps.py), so the workers share one account of gaps.  Packets are staged with COPY into a
temporary table and moved with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING
RETURNING``, which tells exactly which packets were fresh.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
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

def _create_sql(spec: DecodedSpec) -> str:
    # decoded values in column-wise segments: see ground.archive._base.decoded_segment
    return (f"CREATE TABLE IF NOT EXISTS {spec.table} (node_id INTEGER NOT NULL, t0 BIGINT NOT NULL,"
            f" t1 BIGINT NOT NULL, n INTEGER NOT NULL, received DOUBLE PRECISION NOT NULL, ticks BYTEA NOT NULL,"
            f" seq BYTEA NOT NULL, vals BYTEA NOT NULL, texts TEXT, samples BYTEA"
            + "".join(f", {c} DOUBLE PRECISION" for c in spec.summary) + ")")


class PostgresArchive(Archive):
    """The archive in a PostgreSQL database (``postgresql://user@host:port/db``).

    ``schema`` puts every table in that schema (created if missing); tests use a unique
    schema per run and ``drop_schema()`` afterwards.
    """

    def __init__(self, dsn: str, dictionary: Dictionary | None = None, schema: str | None = None) -> None:
        super().__init__(dictionary)
        import psycopg

        self.migrated_from = 0  # schema version migrated from at open (0: none)
        self.url = dsn
        self.schema = schema
        try:
            self.db = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as e:
            raise ArchiveError(f"{dsn}: {e}") from None
        self._lock = threading.RLock()
        db = self.db
        if schema:
            db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            db.execute(f'SET search_path TO "{schema}"')
        if not self._schema_current(db):
            self._create(db)
        db.execute("CREATE TEMP TABLE IF NOT EXISTS _stage (i INTEGER, node_id INTEGER, apid INTEGER,"
                   " ticks BIGINT, seq INTEGER, crc INTEGER, received DOUBLE PRECISION, data BYTEA)")

    def _schema_current(self, db: Any) -> bool:
        """True when every table, index and column of this schema version exists already.

        Then opening takes no lock at all: ``CREATE INDEX IF NOT EXISTS`` locks its table
        even when the index exists, and a worker joining others that ingest could deadlock
        with their transactions."""
        names = ["nodes", "raw_received", "collisions", "timecorr", "status_node", "quarantine_received",
                 "seqstate", "gaps_node"]
        for spec in self.specs.values():
            names += [f"{spec.table}_received", f"{spec.table}_node_t1"]
        row = db.execute("SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest(%s::text[]) n", (names,)).fetchone()
        if not (row and row[0]):
            return False
        have = {(str(t), str(c)) for t, c in db.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()")}
        return all((spec.table, c) in have for spec in self.specs.values() for c in spec.summary)

    def _create(self, db: Any) -> None:
        """Create (or migrate to) this schema version, in one transaction."""
        with db.transaction():
            db.execute("CREATE TABLE IF NOT EXISTS nodes (id SERIAL PRIMARY KEY, site TEXT NOT NULL,"
                       " node TEXT NOT NULL, UNIQUE (site, node))")
            # several workers may open a v1 archive at once: one migrates, the others wait
            db.execute("SELECT pg_advisory_xact_lock(4242001)")
            has = db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'raw'"
                             " AND table_schema = current_schema()").fetchall()
            if has and ("crc",) not in has:
                self.migrated_from = 1
                self._migrate_v1(db)
            db.execute("CREATE TABLE IF NOT EXISTS raw (node_id INTEGER NOT NULL, apid INTEGER NOT NULL,"
                       " ticks BIGINT NOT NULL, seq INTEGER NOT NULL, crc INTEGER NOT NULL,"
                       " received DOUBLE PRECISION NOT NULL, data BYTEA NOT NULL,"
                       " PRIMARY KEY (node_id, apid, ticks, seq, crc))")
            db.execute("CREATE INDEX IF NOT EXISTS raw_received ON raw (received)")
            db.execute("CREATE TABLE IF NOT EXISTS collisions (node_id INTEGER NOT NULL, apid INTEGER NOT NULL,"
                       " ticks BIGINT NOT NULL, seq INTEGER NOT NULL, crc INTEGER NOT NULL,"
                       " received DOUBLE PRECISION NOT NULL, data BYTEA NOT NULL, reason TEXT NOT NULL,"
                       " UNIQUE (node_id, apid, ticks, seq, crc, data))")
            db.execute("CREATE TABLE IF NOT EXISTS timecorr (node_id INTEGER NOT NULL, lo BIGINT NOT NULL,"
                       " hi BIGINT NOT NULL, corr BIGINT NOT NULL, quality INTEGER NOT NULL, boot INTEGER NOT NULL,"
                       " updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (node_id, lo))")
            db.execute("CREATE TABLE IF NOT EXISTS status (node_id INTEGER NOT NULL,"
                       " received DOUBLE PRECISION NOT NULL, state TEXT, body TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS status_node ON status (node_id, received)")
            db.execute("CREATE TABLE IF NOT EXISTS quarantine (received DOUBLE PRECISION NOT NULL,"
                       " topic TEXT NOT NULL, reason TEXT NOT NULL, size INTEGER NOT NULL, detail TEXT NOT NULL,"
                       " sample BYTEA NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS quarantine_received ON quarantine (received)")
            for spec in self.specs.values():
                db.execute(_create_sql(spec))
                # an archive from before the min/max columns: NULL there (such segments are read whole)
                have = {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns WHERE"
                                                 " table_name = %s AND table_schema = current_schema()",
                                                 (spec.table,)).fetchall()}
                for c in spec.summary:
                    if c not in have:
                        db.execute(f"ALTER TABLE {spec.table} ADD COLUMN IF NOT EXISTS {c} DOUBLE PRECISION")
                db.execute(f"CREATE INDEX IF NOT EXISTS {spec.table}_received ON {spec.table} (received)")
                db.execute(f"CREATE INDEX IF NOT EXISTS {spec.table}_node_t1 ON {spec.table} (node_id, t1)")
            # last: a worker starting while others ingest takes its table locks in the order
            # their transactions do (raw, decoded tables, status, gap accounting), never a deadlock
            had_seqstate = bool(db.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'seqstate'"
                                           " AND table_schema = current_schema()").fetchall())
            if has and not had_seqstate and not self.migrated_from:
                self.migrated_from = 2
                log.warning("archive schema v2 -> v%d: sequence-gap accounting in the archive", SCHEMA_VERSION)
            db.execute("CREATE TABLE IF NOT EXISTS seqstate (node_id INTEGER NOT NULL, apid INTEGER NOT NULL,"
                       " expected INTEGER NOT NULL, last_ticks BIGINT NOT NULL, late BIGINT NOT NULL,"
                       " resets BIGINT NOT NULL, updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (node_id, apid))")
            db.execute("CREATE TABLE IF NOT EXISTS gaps (id BIGSERIAL PRIMARY KEY, node_id INTEGER NOT NULL,"
                       " apid INTEGER NOT NULL, first INTEGER NOT NULL, count INTEGER NOT NULL,"
                       " missing INTEGER NOT NULL, t_lo BIGINT NOT NULL, t_hi BIGINT NOT NULL,"
                       " detected DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,"
                       " requests INTEGER NOT NULL, last_request DOUBLE PRECISION, node_dropped BIGINT,"
                       " reason TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS gaps_node ON gaps (node_id, apid, state)")
            if has and not had_seqstate:
                seed_seqstate(db)

    _row_locks = True  # gap accounting: an advisory lock per node (workers take turns per node)

    @property
    def _ph(self) -> str:
        return "%s"

    @staticmethod
    def _migrate_v1(db: Any) -> None:
        # v1 keyed raw on (node_id, apid, ticks, seq): add the CRC (the last two bytes of
        # each packet) and widen the primary key, in the caller's transaction
        log.warning("archive schema v1 -> v%d: adding the CRC to the raw key", SCHEMA_VERSION)
        db.execute("ALTER TABLE raw ADD COLUMN crc INTEGER")
        db.execute("UPDATE raw SET crc = get_byte(data, length(data) - 2) * 256 + get_byte(data, length(data) - 1)")
        db.execute("ALTER TABLE raw ALTER COLUMN crc SET NOT NULL")
        db.execute("ALTER TABLE raw DROP CONSTRAINT raw_pkey")
        db.execute("ALTER TABLE raw ADD PRIMARY KEY (node_id, apid, ticks, seq, crc)")

    def node_id(self, site: str, node: str) -> int:
        key = (site, node)
        nid = self._node_ids.get(key)
        if nid is None:
            self.db.execute("INSERT INTO nodes (site, node) VALUES (%s, %s) ON CONFLICT DO NOTHING", key)
            row = self.db.execute("SELECT id FROM nodes WHERE site = %s AND node = %s", key).fetchone()
            assert row is not None
            nid = row[0]
            self._node_ids[key] = nid
        return nid

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        with self._lock:
            try:
                with self.db.transaction():
                    yield _PgTx(self)
            except BaseException:
                self._node_ids.clear()
                self._seq_known.clear()
                raise

    def _truncate_decoded(self) -> None:
        with self.transaction():
            for spec in self.specs.values():
                self.db.execute(f"TRUNCATE {spec.table}")

    def drop_schema(self) -> None:
        """Drop this archive's schema and everything in it (tests)."""
        if self.schema:
            self.db.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()


class _PgTx(Transaction):
    a: PostgresArchive

    def append_many(self, items: Sequence[tuple[str, str, ParseResult, bytes, float, np.ndarray | None]]
                    ) -> list[np.ndarray]:
        masks: list[np.ndarray] = []
        nids: list[int] = []
        keys: list[tuple[int, int, int, int, int]] = []
        where: list[tuple[int, np.ndarray, int]] = []
        self.collisions = [0] * len(items)
        db = self.db
        db.execute("TRUNCATE _stage")
        nids = [self.a.node_id(it[0], it[1]) for it in items]  # not inside COPY: same connection
        with db.cursor().copy("COPY _stage FROM STDIN") as cp:
            for j, ((_site, _node, result, payload, received, known), nid) in enumerate(zip(items, nids, strict=False)):
                n = result.count
                fresh = np.ones(n, dtype=bool) if known is None else known.copy()
                masks.append(fresh)
                if n == 0:
                    continue
                idx = np.nonzero(fresh)[0].tolist()
                offs = result.offset.tolist()
                lens = result.length.tolist()
                apid = result.apid.tolist()
                ticks = result.ticks.tolist()
                seq = result.seq.tolist()
                crc = packet_crcs(result, payload).tolist()
                for k in idx:
                    cp.write_row((len(keys), nid, apid[k], ticks[k], seq[k], crc[k], received,
                                  payload[offs[k]:offs[k] + lens[k]]))
                    keys.append((nid, apid[k], ticks[k], seq[k], crc[k]))
                    where.append((j, fresh, k))
        if keys:
            got = db.execute("INSERT INTO raw (node_id, apid, ticks, seq, crc, received, data)"
                             " SELECT node_id, apid, ticks, seq, crc, received, data FROM _stage"
                             " ON CONFLICT DO NOTHING RETURNING node_id, apid, ticks, seq, crc").fetchall()
            if len(got) != len(keys):
                inserted = set(got)
                for key, (_j, mask, k) in zip(keys, where, strict=False):
                    if key in inserted:
                        inserted.discard(key)  # a key twice in one batch: only the first is fresh
                    else:
                        mask[k] = False
                # not inserted and other bytes than the archived packet: a collision, kept
                coll = db.execute("INSERT INTO collisions SELECT s.node_id, s.apid, s.ticks, s.seq, s.crc,"
                                  " s.received, s.data, %s FROM _stage s JOIN raw r USING (node_id, apid, ticks,"
                                  " seq, crc) WHERE r.data <> s.data ON CONFLICT DO NOTHING RETURNING node_id,"
                                  " apid, ticks, seq, crc", (KEY_COLLISION,)).fetchall()
                if coll:
                    first = {}
                    for key, (j, _m, _k) in zip(keys, where, strict=False):
                        first.setdefault(key, j)
                    for key in coll:
                        self.collisions[first[tuple(key)]] += 1
        for (_site, _node, result, _payload, received, _k), fresh, nid in zip(items, masks, nids, strict=False):
            self._decoded(nid, result, fresh, received)
        self._account_gaps(items, masks, nids)
        return masks

    def _decoded(self, nid: int, result: ParseResult, fresh: np.ndarray, received: float) -> None:
        for apid_ in result.tables:
            spec = self.a.specs.get(apid_)
            seg = decoded_segment(spec, nid, result, fresh, received) if spec else None
            if seg is not None and spec is not None:
                cols = spec.segment_columns
                self.db.execute(f"INSERT INTO {spec.table} ({', '.join(cols)}) VALUES ({','.join(['%s'] * len(cols))})",
                                seg)

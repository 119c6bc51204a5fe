"""The archive suite, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ground.archive import Archive, open_archive, unix_to_ticks
from ground.archive._base import SCHEMA_VERSION
from ground.ingest.testing import hk, packet
from ground.parse import Parser
from wire import defs

PG_DSN = os.environ.get("LUNABASE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reason() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return None
    except Exception as e:
        return f"no PostgreSQL at {PG_DSN}: {e}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path) -> Iterator[Archive]:
    if request.param == "sqlite":
        a = open_archive(f"sqlite:///{tmp_path}/a.db")
        yield a
        a.close()
    else:
        reason = _pg_reason()
        if reason:
            pytest.skip(reason)
        a = open_archive(PG_DSN, schema=f"lb_test_{uuid.uuid4().hex[:12]}")
        try:
            yield a
        finally:
            a.drop_schema()  # type: ignore[attr-defined]
            a.close()


T0 = 1_780_000_000.0  # a Unix time in 2026


def _store(a: Archive, node: str, payload: bytes, received: float = T0) -> np.ndarray:
    res = Parser().parse(payload)
    with a.transaction() as tx:
        return tx.append_packets("moon", node, res, payload, received)


def test_append_dedupe_and_query(archive: Archive) -> None:
    pl = b"".join(hk(i, unix_to_ticks(T0 + i), free_heap=30000 + i, cpu_temp=2150) for i in range(10))
    assert _store(archive, "n01", pl).all()
    again = _store(archive, "n01", pl[: 5 * len(hk(0))])
    assert not again.any()  # the same key (node, APID, ticks, seq) is never stored twice
    _store(archive, "n02", hk(0, unix_to_ticks(T0), free_heap=1))
    assert archive.count_raw() == 11
    assert archive.count_raw(node="n01") == 10
    p = archive.parameter("HK.free_heap", node="n01", t0=T0 + 2, t1=T0 + 5)
    assert list(p["value"]) == [30002.0, 30003.0, 30004.0]
    assert np.allclose(p["time"], [T0 + 2, T0 + 3, T0 + 4])
    assert archive.parameter("cpu_temp", node="n01")["value"][0] == pytest.approx(21.5)
    raw = archive.raw_packets(node="n01", t0=T0, t1=T0 + 1)
    assert len(raw) == 1 and raw[0].data == pl[: len(hk(0))] and raw[0].seq == 0
    assert sorted(archive.nodes()) == [("moon", "n01"), ("moon", "n02")]


def test_duplicate_inside_one_container(archive: Archive) -> None:
    one = hk(7, unix_to_ticks(T0))
    fresh = _store(archive, "n01", one + one + hk(8, unix_to_ticks(T0 + 1)))
    assert list(fresh) == [True, False, True]
    assert archive.count_raw() == 2
    assert len(archive.table("HK")["seq"]) == 2


def test_seismic_blob_and_text(archive: Archive) -> None:
    samples = np.arange(300, dtype=">i2").tobytes()
    pl = packet(defs.APID_SEISMIC, 1, unix_to_ticks(T0), values={"rate": 100}, samples=samples)
    pl += packet(defs.APID_EVENT, 1, unix_to_ticks(T0), values={"code": 1, "text": b"hello moon"})
    _store(archive, "n03", pl)
    t = archive.table("SEISMIC", node="n03")
    assert t["samples"].shape == (1, 100, 3)
    assert t["samples"][0, 1, 2] == 5 and t["rate"][0] == 100
    ev = archive.table("EVENT")
    assert ev["text"] == ["hello moon"]


def test_status_history(archive: Archive) -> None:
    with archive.transaction() as tx:
        tx.append_status("moon", "n01", {"state": "online", "boot": 3}, T0)
        tx.append_status("moon", "n01", {"state": "asleep", "next_contact": 99}, T0 + 10)
    h = archive.status_history(node="n01")
    assert [s["state"] for s in h] == ["online", "asleep"]
    assert h[1]["next_contact"] == 99 and h[0]["received"] == T0
    assert archive.status_history(node="n01", t0=T0 + 5) == h[1:]


def test_rebuild_from_raw(archive: Archive) -> None:
    pl = b"".join(hk(i, unix_to_ticks(T0 + i), uptime=i) for i in range(30))
    _store(archive, "n01", pl)
    before = archive.table("HK")
    assert archive.rebuild(batch=7) == 30
    after = archive.table("HK")
    assert np.array_equal(before["uptime"], after["uptime"]) and np.array_equal(before["seq"], after["seq"])


def test_retention(archive: Archive) -> None:
    _store(archive, "n01", hk(1, unix_to_ticks(T0)), received=T0 - 10 * 86400)
    _store(archive, "n01", hk(2, unix_to_ticks(T0)), received=T0)
    with archive.transaction() as tx:
        tx.append_status("moon", "n01", {"state": "online"}, T0 - 10 * 86400)
    assert archive.retention(days=5, now_=T0) == 1
    assert archive.count_raw() == 1 and len(archive.table("HK")["seq"]) == 1
    assert archive.status_history() == []


def test_reopen_keeps_data(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    a = open_archive(url)
    _store(a, "n01", hk(1, unix_to_ticks(T0)))
    a.close()
    b = open_archive(url)
    assert b.count_raw() == 1
    assert not _store(b, "n01", hk(1, unix_to_ticks(T0))).any()
    b.close()


def test_pipeline_batches_and_redelivery(parser_cls, archive: Archive) -> None:
    from ground.ingest import Pipeline

    p = Pipeline(archive, parser=parser_cls(archive.dictionary))
    msgs = [(f"lunabase/moon/n0{k % 3}/tm", hk(k // 3, unix_to_ticks(T0 + k)), T0) for k in range(30)]
    p.process(msgs[:20])
    p.process(msgs[10:])  # 10 redelivered, 10 new, in one batch
    fresh_pipeline = Pipeline(archive, parser=parser_cls(archive.dictionary))  # a restarted worker: no in-memory window
    fresh_pipeline.process(msgs[:5] + [("lunabase/moon/n01/status", b'{"state": "online"}', T0)])
    assert archive.count_raw() == 30
    assert p.snapshot()["totals"]["duplicates"] == 10
    assert fresh_pipeline.snapshot()["totals"]["duplicates"] == 5
    assert len(archive.table("HK")["seq"]) == 30
    assert archive.status_history(node="n01")[0]["state"] == "online"


def test_sqlite_checkpoints_fall_back_to_autocheckpoint(tmp_path, caplog) -> None:
    """If the checkpoint thread cannot open its connection, SQLite checkpoints by itself again."""
    import sqlite3

    calls = []

    def connect(*a, **kw):
        calls.append(a)
        if len(calls) > 1:  # the archive's own connection works; the checkpointer's does not
            raise sqlite3.OperationalError("unable to open database file")
        return sqlite3.connect(*a, **kw)

    a = open_archive(f"sqlite:///{tmp_path}/a.db", checkpoint_interval_s=0.05, connect=connect)
    try:
        assert a._ckpt is not None  # type: ignore[attr-defined]
        a._ckpt.join(10)  # type: ignore[attr-defined]
        assert a.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert "checkpoint thread cannot connect" in caplog.text
    finally:
        a.close()


def test_reset_node_same_time_and_count_is_a_new_packet(archive: Archive) -> None:
    """A node whose clock and counters restarted sends (ticks, seq) already archived, other bytes."""
    first = b"".join(hk(i, unix_to_ticks(T0 + i), uptime=i, boot_count=1) for i in range(5))
    again = b"".join(hk(i, unix_to_ticks(T0 + i), uptime=i, boot_count=2) for i in range(5))
    assert _store(archive, "n01", first).all()
    assert _store(archive, "n01", again).all()  # other CRC: another key, archived
    assert archive.count_raw(node="n01") == 10
    assert sorted(archive.table("HK", node="n01")["boot_count"].tolist()) == [1] * 5 + [2] * 5
    assert not _store(archive, "n01", again).any()  # a true redelivery is still a duplicate
    assert archive.count_raw(node="n01") == 10 and archive.count_collisions() == {}


def test_same_key_and_crc_other_bytes_is_kept_as_a_collision(archive: Archive) -> None:
    from ground.parse import Parser

    a = hk(3, unix_to_ticks(T0), free_heap=1000)
    assert _store(archive, "n01", a).all()
    # same key and CRC trailer, other bytes (what a 1-in-65536 CRC match looks like): the
    # archive is handed the parse of the original with the forged bytes
    forged = a[:12] + bytes([a[12] ^ 1]) + a[13:]
    res_f = Parser().parse(a)
    with archive.transaction() as tx:
        fresh = tx.append_packets("moon", "n01", res_f, forged, T0 + 1)
        assert tx.collisions == [1]
    assert not fresh.any()
    assert archive.count_raw() == 1
    assert archive.count_collisions() == {"key_collision": 1}
    (pkt, reason), = archive.collisions(node="n01")
    assert pkt.data == forged and reason == "key_collision" and pkt.seq == 3
    with archive.transaction() as tx:  # the same collision redelivered is not kept twice
        tx.append_packets("moon", "n01", res_f, forged, T0 + 2)
    assert archive.count_collisions() == {"key_collision": 1}


def test_pipeline_counts_collisions_apart_from_duplicates(parser_cls, archive: Archive) -> None:
    from ground.ingest import Pipeline

    p = Pipeline(archive, parser=parser_cls(archive.dictionary))
    pk = hk(1, unix_to_ticks(T0), uptime=1)
    p.process([("lunabase/moon/n01/tm", pk, T0)])
    p.process([("lunabase/moon/n01/tm", pk, T0)])  # redelivery
    p.process([("lunabase/moon/n01/tm", hk(1, unix_to_ticks(T0), uptime=99), T0)])  # reset node
    link = p.snapshot()["links"]["moon/n01"]
    assert link["duplicates"] == 1 and link["fresh"] == 2 and link["collisions"] == 0
    assert archive.count_raw() == 2


def test_time_corrections_apply_to_queries(archive: Archive) -> None:
    from ground.archive import CORRECTED, OPEN_END, TimeCorrection

    # a node booted with its clock at the epoch: 5 packets stamped 2000-01-01 + i, then synced
    pre = b"".join(hk(i, (100 + i) << 16, uptime=i) for i in range(5))
    post = b"".join(hk(5 + i, unix_to_ticks(T0 + 5 + i), uptime=5 + i) for i in range(5))
    _store(archive, "n01", pre + post)
    corr = unix_to_ticks(T0) - (100 << 16)
    archive.set_time_correction("moon", "n01", TimeCorrection(100 << 16, OPEN_END, corr, 2, boot=1))
    archive.set_time_correction("moon", "n01", TimeCorrection(100 << 16, 105 << 16, corr, CORRECTED, boot=1))
    t = archive.table("HK", node="n01")
    assert np.allclose(t["time"], [T0 + i for i in range(10)])
    assert t["time_quality"] == ["corrected"] * 5 + ["synced"] * 5
    assert t["ticks"][0] == 100 << 16  # the node's own tag is kept
    p = archive.parameter("HK.uptime", node="n01", t0=T0 + 3, t1=T0 + 7)
    assert list(p["value"]) == [3, 4, 5, 6] and p["time_quality"][:2] == ["corrected", "corrected"]
    raw = archive.raw_packets(node="n01", t0=T0 + 3, t1=T0 + 7)
    assert [r.seq for r in raw] == [3, 4, 5, 6]
    assert raw[0].quality == "corrected" and raw[0].time == pytest.approx(T0 + 3)
    assert raw[3].quality == "synced"
    (c,) = archive.node_time_corrections("moon", "n01")
    assert c.as_dict()["quality"] == "corrected" and c.as_dict()["correction_s"] == pytest.approx(corr / 65536)


def test_v1_archive_is_migrated(tmp_path) -> None:
    """An archive written before the CRC joined the key opens, keeps its rows, and de-duplicates."""
    import sqlite3

    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE nodes (id INTEGER PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL, UNIQUE (site, node))")
    db.execute("CREATE TABLE raw (node_id INTEGER NOT NULL, apid INTEGER NOT NULL, ticks INTEGER NOT NULL,"
               " seq INTEGER NOT NULL, received REAL NOT NULL, data BLOB NOT NULL,"
               " PRIMARY KEY (node_id, apid, ticks, seq)) WITHOUT ROWID")
    db.execute("INSERT INTO nodes VALUES (1, 'moon', 'n01')")
    pk = hk(4, unix_to_ticks(T0), uptime=4)
    db.execute("INSERT INTO raw VALUES (1, 1, ?, 4, ?, ?)", (unix_to_ticks(T0), T0, pk))
    db.commit()
    db.close()
    a = open_archive(f"sqlite:///{path}")
    try:
        assert a.migrated_from == 1  # type: ignore[attr-defined]
        assert a.count_raw() == 1
        assert not _store(a, "n01", pk).any()  # the migrated key still de-duplicates
        assert _store(a, "n01", hk(4, unix_to_ticks(T0), uptime=5)).all()
        assert a.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        a.close()


@pytest.mark.postgres
def test_v1_postgres_archive_is_migrated() -> None:
    reason = _pg_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = f"lb_test_{uuid.uuid4().hex[:12]}"
    pk = hk(4, unix_to_ticks(T0), uptime=4)
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
        c.execute(f'SET search_path TO "{schema}"')
        c.execute("CREATE TABLE nodes (id SERIAL PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL, UNIQUE (site, node))")
        c.execute("CREATE TABLE raw (node_id INTEGER NOT NULL, apid INTEGER NOT NULL, ticks BIGINT NOT NULL,"
                  " seq INTEGER NOT NULL, received DOUBLE PRECISION NOT NULL, data BYTEA NOT NULL,"
                  " PRIMARY KEY (node_id, apid, ticks, seq))")
        c.execute("INSERT INTO nodes (site, node) VALUES ('moon', 'n01')")
        c.execute("INSERT INTO raw VALUES (1, 1, %s, 4, %s, %s)", (unix_to_ticks(T0), T0, pk))
    a = open_archive(PG_DSN, schema=schema)
    try:
        assert a.migrated_from == 1  # type: ignore[attr-defined]
        assert not _store(a, "n01", pk).any()
        assert _store(a, "n01", hk(4, unix_to_ticks(T0), uptime=5)).all()
        assert a.count_raw() == 2
    finally:
        a.drop_schema()  # type: ignore[attr-defined]
        a.close()


def test_quarantine_table(archive: Archive) -> None:
    """Quarantined messages keep topic, reason and sample; NUL and lone surrogates are escaped."""
    with archive.transaction() as tx:
        tx.append_quarantine(T0, "lunabase/moon/n\x00\ud800/tm", "bad_topic", 3, "detail\x00", b"\x00\xff\x01")
        tx.append_quarantine(T0 + 1, "lunabase/moon/n01/status", "too_deep", 2000, "nested", b"[[[")
    q = archive.quarantined()
    assert [x["reason"] for x in q] == ["too_deep", "bad_topic"]
    assert q[1]["topic"] == "lunabase/moon/n\\x00\\ud800/tm" and q[1]["sample"] == b"\x00\xff\x01"
    assert archive.quarantined(reason="too_deep")[0]["size"] == 2000
    assert archive.count_quarantined() == {"bad_topic": 1, "too_deep": 1}
    assert archive.retention(1, now_=T0 + 10 * 86400) == 0 and archive.quarantined() == []


def test_parameter_decimated_in_the_database(archive: Archive) -> None:
    """A long range comes back thinned to max_points, values taken from the archive as stored."""
    parser = Parser(archive.dictionary)
    for b in range(40):  # 40 batches x 50 packets, 1 s apart
        pl = b"".join(hk(b * 50 + i, unix_to_ticks(T0 + b * 50 + i), uptime=b * 50 + i) for i in range(50))
        res = parser.parse(pl)
        with archive.transaction() as tx:
            tx.append_packets("moon", "n01", res, pl, T0 + b * 50)
    full = archive.parameter_decimated("HK.uptime", "n01", T0, T0 + 2000, max_points=5000)
    assert full["count"] == 2000 and full["value"] == [float(i) for i in range(2000)]
    thin = archive.parameter_decimated("HK.uptime", "n01", T0, T0 + 2000, max_points=20)
    assert thin["count"] == 2000 and 10 <= len(thin["value"]) <= 20
    assert thin["value"] == sorted(thin["value"]) and set(thin["value"]) <= {float(i) for i in range(2000)}
    assert thin["time"] == [T0 + v for v in thin["value"]]
    assert archive.parameter_decimated("HK.uptime", "n02", T0, T0 + 2000)["count"] == 0
    latest = archive.latest_raw("n01", 3)
    assert [r.seq for r in latest] == [1997, 1998, 1999]

"""The archive suite, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ground.archive import Archive, open_archive, unix_to_ticks
from ground.ingest.testing import hk, packet
from ground.parse import Parser

PG_DSN = os.environ.get("LUNABASE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reason() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return None
    except Exception as e:  # noqa: BLE001
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
    pl = packet(5, 1, unix_to_ticks(T0), values={"rate": 100}, samples=samples)
    pl += packet(6, 1, unix_to_ticks(T0), values={"code": 1, "text": b"hello moon"})
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


def test_pipeline_batches_and_redelivery(archive: Archive) -> None:
    from ground.ingest import Pipeline

    p = Pipeline(archive)
    msgs = [(f"lunabase/moon/n0{k % 3}/tm", hk(k // 3, unix_to_ticks(T0 + k)), T0) for k in range(30)]
    p.process(msgs[:20])
    p.process(msgs[10:])  # 10 redelivered, 10 new, in one batch
    fresh_pipeline = Pipeline(archive)  # a restarted worker: no in-memory window
    fresh_pipeline.process(msgs[:5] + [("lunabase/moon/n01/status", b'{"state": "online"}', T0)])
    assert archive.count_raw() == 30
    assert p.snapshot()["totals"]["duplicates"] == 10
    assert fresh_pipeline.snapshot()["totals"]["duplicates"] == 5
    assert len(archive.table("HK")["seq"]) == 30
    assert archive.status_history(node="n01")[0]["state"] == "online"


def test_sqlite_checkpoints_fall_back_to_autocheckpoint(tmp_path, monkeypatch, caplog) -> None:  # noqa: ANN001
    """If the checkpoint thread cannot open its connection, SQLite checkpoints by itself again."""
    import sqlite3

    import ground.archive.sqlite as mod

    real = sqlite3.connect
    calls = []

    def connect(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(a)
        if len(calls) > 1:  # the archive's own connection works; the checkpointer's does not
            raise sqlite3.OperationalError("unable to open database file")
        return real(*a, **kw)

    monkeypatch.setattr(mod.sqlite3, "connect", connect)
    a = open_archive(f"sqlite:///{tmp_path}/a.db", checkpoint_interval_s=0.05)
    try:
        assert a._ckpt is not None  # type: ignore[attr-defined]
        a._ckpt.join(10)  # type: ignore[attr-defined]
        assert a.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert "checkpoint thread cannot connect" in caplog.text
    finally:
        a.close()

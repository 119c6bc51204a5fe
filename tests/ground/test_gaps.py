"""Sequence-gap accounting in the archive (ground/archive/_gaps.py), SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ground.archive import Archive, open_archive, unix_to_ticks
from ground.archive._base import SCHEMA_VERSION
from ground.ingest.testing import hk
from ground.parse import Parser
from wire import ccsds

PG_DSN = os.environ.get("LUNABASE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = 1_780_000_000.0


def _pg_reason() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return None
    except Exception as e:
        return f"no PostgreSQL at {PG_DSN}: {e}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[Archive, Archive]]:
    """Two connections to one archive: two ingest workers."""
    if request.param == "sqlite":
        a, b = open_archive(f"sqlite:///{tmp_path}/a.db"), open_archive(f"sqlite:///{tmp_path}/a.db")
        yield a, b
        a.close()
        b.close()
        return
    reason = _pg_reason()
    if reason:
        pytest.skip(reason)
    schema = f"lb_gaps_{uuid.uuid4().hex[:12]}"
    a, b = open_archive(PG_DSN, schema=schema), open_archive(PG_DSN, schema=schema)
    try:
        yield a, b
    finally:
        b.close()
        a.drop_schema()  # type: ignore[attr-defined]
        a.close()


def store(a: Archive, seqs: list[int], node: str = "n01", dt: float = 1.0) -> np.ndarray:
    """HK packets with these counts, time tag T0 + count * dt (so a late packet has an older tag)."""
    payload = b"".join(hk(s % ccsds.SEQ_MOD, unix_to_ticks(T0 + s * dt)) for s in seqs)
    res = Parser().parse(payload)
    with a.transaction() as tx:
        return tx.append_packets("moon", node, res, payload, time.time())


def later(a: Archive) -> float:
    return time.time() + a.gap_settle_s + 1


def test_gap_opens_is_reported_once_settled_and_fills(two) -> None:
    a, _ = two
    store(a, list(range(0, 10)))
    store(a, list(range(15, 20)))  # 10..14 missing
    assert a.gaps(site="moon") == []  # not settled yet: could be reordering between workers
    (g,) = a.gaps(site="moon", now_=later(a))
    assert (g["node"], g["apid"], g["first"], g["last"], g["count"], g["missing"], g["state"]) == \
        ("n01", 1, 10, 14, 5, 5, "open")
    assert a.gap_summary("moon", now_=later(a))[("moon", "n01")]["missing"] == 5
    # the refiller's side: asked, then two arrive
    a.update_gap(g["id"], state="refilling", request=time.time(), reason="REPLAY #1")
    store(a, [11, 12])
    (g,) = a.gaps(site="moon")
    assert (g["state"], g["missing"], g["filled"], g["requests"]) == ("refilling", 3, 2, 1)
    assert a.gap_archived_seqs(g) == {11, 12}
    store(a, [10, 13, 14])
    (g,) = a.gaps(site="moon")
    assert (g["state"], g["missing"]) == ("filled", 0)
    a.update_gap(g["id"], state="lost")  # a filled gap stays filled
    assert a.gaps(site="moon")[0]["state"] == "filled"
    assert a.gaps(site="moon", states=("open", "refilling", "lost")) == []
    s = a.gap_summary("moon")[("moon", "n01")]
    assert (s["gaps"], s["states"]["filled"], s["missing"], s["lost"]) == (1, 1, 0, 0)


def test_reordering_between_workers_is_no_gap(two) -> None:
    """Worker B commits 20..39 before worker A commits 0..19: a hole for a moment, never reported."""
    a, b = two
    store(a, [0])
    store(b, list(range(20, 40)))
    assert store(a, list(range(1, 20))).all()
    store(b, list(range(40, 50)))
    assert a.gaps(site="moon", now_=later(a)) == [] and b.gaps(site="moon", now_=later(b)) == []
    assert a.count_raw() == 50


def test_wraparound_reset_lost_and_duplicates(two) -> None:
    a, b = two
    store(a, list(range(ccsds.SEQ_MOD - 4, ccsds.SEQ_MOD + 6)))  # the last 4 counts, then 0..5: a wrap, no gap
    store(b, list(range(ccsds.SEQ_MOD - 4, ccsds.SEQ_MOD + 6)))  # all duplicates: nothing counted twice
    assert a.gaps(site="moon", now_=later(a)) == []
    # a node that restarts its counter (newer tag, lower count) is not a gap
    payload = b"".join(hk(s, unix_to_ticks(T0 + 20000 + s)) for s in range(3))
    res = Parser().parse(payload)
    with a.transaction() as tx:
        tx.append_packets("moon", "n01", res, payload, time.time())
    assert a.gaps(site="moon", now_=later(a)) == []
    # a gap across the wrap (another node)
    store(a, [16000, 16001, ccsds.SEQ_MOD + 2], node="n02")
    (g,) = a.gaps(site="moon", now_=later(a))
    assert (g["node"], g["first"], g["count"], g["last"]) == ("n02", 16002, ccsds.SEQ_MOD - 16002 + 2, 1)
    a.update_gap(g["id"], state="lost", node_dropped=7, reason="beyond the journal window")
    (g,) = a.gaps(site="moon", states=("lost",))
    assert (g["node_dropped"], g["reason"]) == (7, "beyond the journal window")
    assert a.gap_summary("moon")[("moon", "n02")]["lost"] == g["missing"]
    assert a.bytes_since("moon", "n02", unix_to_ticks(T0 + 16001)) == len(hk(0))


def test_v2_archive_is_migrated_to_gap_accounting(tmp_path) -> None:
    """A v2 archive (no seqstate) opens as v3, its sequence state seeded from the newest packets."""
    path = tmp_path / "v2.db"
    a = open_archive(f"sqlite:///{path}")
    store(a, list(range(10)))
    a.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE seqstate")
    db.execute("DROP TABLE gaps")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    a = open_archive(f"sqlite:///{path}")
    try:
        assert a.migrated_from == 2  # type: ignore[attr-defined]
        assert a.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert a.db.execute("SELECT expected, last_ticks FROM seqstate").fetchall() == \
            [(10, unix_to_ticks(T0 + 9))]
        store(a, [12])  # 10 and 11 missing: seen against the seeded state
        (g,) = a.gaps(site="moon", now_=later(a))
        assert (g["first"], g["count"]) == (10, 2)
    finally:
        a.close()

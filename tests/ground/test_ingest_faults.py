"""Fault tests with a real mosquitto: broker restart, ground SIGKILL, hostile payloads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from ground import parse as gp
from ground.archive import open_archive, unix_to_ticks
from ground.ingest import IngestWorker
from ground.ingest.testing import hk, packet
from lunabase import ROOT
from sim.mosquitto import Mosquitto
from wire import ccsds, defs, topics

T0 = 1_780_000_000.0
PER_MSG = 10


def container(m: int) -> bytes:
    """Message m of node n01: packets m*PER_MSG .. +PER_MSG (seq and time tag from the index)."""
    return b"".join(hk((m * PER_MSG + k) % ccsds.SEQ_MOD, unix_to_ticks(T0) + m * PER_MSG + k) for k in range(PER_MSG))


async def reliable_publish(b: Mosquitto, messages: int, progress: list[int], pause: float = 0.002) -> None:
    """At-least-once like a node journal: retry a message until the broker PUBACKs it."""
    m = 0
    while m < messages:
        try:
            async with aiomqtt.Client(b.host, b.port, identifier="pub-n01", timeout=5) as c:
                while m < messages:
                    await c.publish(topics.topic("moon", "n01", "tm"), container(m), qos=1, timeout=5)
                    m += 1
                    progress[0] = m
                    await asyncio.sleep(pause)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


def archived(db: Path) -> list[tuple[int, int]]:
    if not db.exists():
        return []
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return c.execute("SELECT seq, ticks FROM raw").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        c.close()


def check_exact(rows: list[tuple[int, int]], messages: int) -> None:
    want = {((i % ccsds.SEQ_MOD), unix_to_ticks(T0) + i) for i in range(messages * PER_MSG)}
    assert len(rows) == len(set(rows)), "duplicates in the archive"
    missing = want - set(rows)
    assert not missing, f"{len(missing)} packets lost, e.g. {sorted(missing)[:5]}"
    assert len(rows) == len(want)


async def wait_rows(db: Path, n: int, timeout: float = 60.0) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    rows = archived(db)
    while len(rows) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        rows = archived(db)
    return rows


@pytest.mark.slow
async def test_broker_restart_loses_and_duplicates_nothing(parser_cls, broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    archive = open_archive(f"sqlite:///{db}")
    w = IngestWorker(archive, broker.host, broker.port, client_id="ing-restart", parser=parser_cls(archive.dictionary))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 10)
    messages = 300
    progress = [0]
    pub = asyncio.create_task(reliable_publish(broker, messages, progress))
    while progress[0] < 100:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(broker.restart)  # graceful: mosquitto saves sessions and queues
    await asyncio.wait_for(pub, 60)
    rows = await wait_rows(db, messages * PER_MSG)
    w.stop()
    await asyncio.wait_for(task, 10)
    assert w.connections >= 2
    check_exact(rows, messages)
    archive.close()


def start_worker(b: Mosquitto, db: Path, stats: Path, log: Path, parser_cls: Any) -> subprocess.Popen[bytes]:
    # the worker process picks its twin through the dispatcher's environment variable
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{gp.PURE_ENV: "1" if parser_cls is gp.PyParser else "0"})
    return subprocess.Popen(
        [sys.executable, "-m", "ground.cli_data", "ingest", "--broker", f"mqtt://{b.host}:{b.port}",
         "--archive", f"sqlite:///{db}", "--client-id", "ing-kill", "--stats-file", str(stats),
         "--stats-interval", "0.2"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True,
    )


async def wait_stats(stats: Path, pred, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = json.loads(stats.read_text())
            if pred(s):
                return s
        except (FileNotFoundError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"stats never matched: {stats.read_text() if stats.exists() else 'no stats file'}")


@pytest.mark.slow
async def test_worker_sigkill_loses_and_duplicates_nothing(parser_cls, broker: Mosquitto, tmp_path: Path) -> None:
    db, stats, log = tmp_path / "a.db", tmp_path / "stats.json", tmp_path / "worker.log"
    p = start_worker(broker, db, stats, log, parser_cls)
    try:
        await wait_stats(stats, lambda s: s["worker"]["connected"])
        messages = 400
        progress = [0]
        pub = asyncio.create_task(reliable_publish(broker, messages, progress))
        while len(archived(db)) < 500:  # mid-ingest, with batches committed
            await asyncio.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        at_kill = len(archived(db))
        stats.unlink(missing_ok=True)
        p = start_worker(broker, db, stats, log, parser_cls)
        await asyncio.wait_for(pub, 60)
        rows = await wait_rows(db, messages * PER_MSG)
        assert at_kill < messages * PER_MSG, "the kill did not happen mid-ingest"
        check_exact(rows, messages)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.mark.slow
async def test_hostile_payloads_are_counted_and_the_worker_survives(parser_cls, broker: Mosquitto,
                                                                   tmp_path: Path) -> None:
    db, stats, log = tmp_path / "a.db", tmp_path / "stats.json", tmp_path / "worker.log"
    p = start_worker(broker, db, stats, log, parser_cls)
    try:
        await wait_stats(stats, lambda s: s["worker"]["connected"])
        good = hk(1, unix_to_ticks(T0))
        unknown = bytearray(packet(defs.APID_HK, 2, unix_to_ticks(T0)))
        unknown[1] = 0x33
        ccsds.seal(unknown, 0, len(unknown))
        t = topics.topic("moon", "n07", "tm")
        async with aiomqtt.Client(broker.host, broker.port, identifier="evil") as c:
            await c.publish(t, os.urandom(3000), qos=1)  # garbage
            await c.publish(t, good[:40], qos=1)  # truncated
            await c.publish(t, b"\x08\x01" + b"\x00" * 400_000, qos=1)  # oversized
            await c.publish(t, bytes(unknown), qos=1)  # unknown APID
            await c.publish(topics.topic("moon", "n07", "status"), b"\xff\xfe not json", qos=1)
            await c.publish(t, good, qos=1)
        s = await wait_stats(stats, lambda s: s["links"].get("moon/n07", {}).get("fresh") == 1)
        err = s["links"]["moon/n07"]["errors"]
        assert err["truncated"]["bytes"] == 40
        assert err["oversized"]["bytes"] == 400_002
        assert err["unknown_apid"]["bytes"] == len(unknown)
        assert err["bad_status"]["count"] == 1
        twin = "python" if parser_cls is gp.PyParser else "cython"
        assert f"parser {twin}" in log.read_text(), "the worker runs the twin under test"
        assert sum(e["bytes"] for e in err.values()) >= 3000 + 40 + 400_002 + len(unknown)
        assert p.poll() is None, "the worker died"
        assert len(archived(db)) == 1
        assert "rejected" in log.read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()

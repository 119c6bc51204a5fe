"""Ingest end to end against a real mosquitto, and the pipeline's counters."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiomqtt
import numpy as np
import pytest

from ground.archive import open_archive, unix_to_ticks
from ground.ingest import IngestWorker, Pipeline
from ground.ingest.testing import hk, packet
from sim.mosquitto import Mosquitto
from wire import ccsds, defs, topics

T0 = 1_780_000_000.0


class RecordingSink:
    def __init__(self) -> None:
        self.packets: list[tuple[str, int, int]] = []
        self.status: list[dict] = []
        self.rejected: list[str] = []

    def on_packets(self, site, node, result, fresh, received):
        self.packets += [(node, int(s), bool(f)) for s, f in zip(result.seq, fresh, strict=True)]

    def on_status(self, site, node, status, received):
        self.status.append(status)

    def on_rejected(self, site, node, rejected, payload):
        self.rejected += [r.reason for r in rejected]


async def wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_ingest_end_to_end(parser_cls, broker: Mosquitto, tmp_path) -> None:
    archive = open_archive(f"sqlite:///{tmp_path}/a.db")
    sink = RecordingSink()
    w = IngestWorker(archive, broker.host, broker.port, client_id="ing-e2e", sinks=[sink], parser=parser_cls(archive.dictionary))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 10)
    async with aiomqtt.Client(broker.host, broker.port, identifier="pub-e2e") as pub:
        await pub.publish(topics.topic("moon", "n01", "status"), json.dumps({"state": "online", "boot": 1}), qos=1)
        for m in range(20):
            pl = b"".join(hk(m * 5 + i, unix_to_ticks(T0 + m * 5 + i), uptime=m) for i in range(5))
            await pub.publish(topics.topic("moon", "n01", "tm"), pl, qos=1)
        # a gap: seq 100..101 missing; then 102
        await pub.publish(topics.topic("moon", "n01", "tm"), hk(102, unix_to_ticks(T0 + 102)), qos=1)
        # a redelivered copy
        await pub.publish(topics.topic("moon", "n01", "tm"), hk(3, unix_to_ticks(T0 + 3)), qos=1)
        await pub.publish(topics.topic("moon", "n02", "tm"), b"\x00garbage" * 10, qos=1)
    await wait_for(lambda: w.stats()["totals"]["messages"] >= 24)
    w.stop()
    await asyncio.wait_for(task, 10)
    assert archive.count_raw(node="n01") == 101
    s = w.stats()
    n01 = s["links"]["moon/n01"]
    assert n01["duplicates"] == 1 and n01["fresh"] == 101
    assert n01["gaps"] == 1 and n01["missing"] == 2
    assert n01["status_messages"] == 1 and sink.status[0]["state"] == "online"
    assert s["links"]["moon/n02"]["rejected_bytes"] == 80
    assert sink.rejected and len([p for p in sink.packets if p[2]]) == 101
    assert archive.status_history(node="n01")[0]["boot"] == 1
    archive.close()


def test_pipeline_counts_bad_payloads(parser_cls, tmp_path, caplog) -> None:
    archive = open_archive(f"sqlite:///{tmp_path}/a.db")
    p = Pipeline(archive, max_payload=4096, parser=parser_cls(archive.dictionary))
    good = hk(0, unix_to_ticks(T0))
    unknown = bytearray(packet(defs.APID_HK, 1, unix_to_ticks(T0)))
    unknown[1] = 0x33  # APID 0x033: not in the dictionary (resealed below)
    ccsds.seal(unknown, 0, len(unknown))
    batch = [
        ("lunabase/moon/n01/tm", b"\xff" * 50, T0),  # garbage
        ("lunabase/moon/n01/tm", good[:30], T0),  # truncated
        ("lunabase/moon/n01/tm", b"\x00" * 5000, T0),  # oversized
        ("lunabase/moon/n01/tm", bytes(unknown), T0),  # unknown APID
        ("lunabase/moon/n01/tm", b"", T0),
        ("lunabase/moon/n01/status", b"{not json", T0),
        ("elsewhere/x", b"abc", T0),
        ("lunabase/moon/n01/tm", good, T0),
    ]
    with caplog.at_level(logging.WARNING, logger="lunabase.ingest"):
        p.process(batch)
    s = p.snapshot()
    err = s["links"]["moon/n01"]["errors"]
    assert err["bad_version"]["bytes"] == 50
    assert err["truncated"]["bytes"] == 30
    assert err["oversized"]["bytes"] == 5000
    assert err["unknown_apid"]["bytes"] == len(unknown)
    assert err["bad_status"]["count"] == 1 and err["empty"]["count"] == 1
    assert s["totals"]["errors"]["bad_topic"]["count"] == 1
    assert s["links"]["moon/n01"]["fresh"] == 1 and archive.count_raw() == 1
    assert "rejected" in caplog.text


def test_failing_sink_is_counted_and_logged_and_loses_nothing(parser_cls, tmp_path, caplog) -> None:
    class Broken:
        def on_packets(self, site, node, result, fresh, received):
            raise RuntimeError("sink bug")

        on_status = on_rejected = on_packets

    archive = open_archive(f"sqlite:///{tmp_path}/a.db")
    good = RecordingSink()
    p = Pipeline(archive, sinks=[Broken(), good], parser=parser_cls(archive.dictionary))
    with caplog.at_level(logging.ERROR, logger="lunabase.ingest"):
        p.process([("lunabase/moon/n01/tm", hk(0, unix_to_ticks(T0)), T0),
                   ("lunabase/moon/n01/tm", b"\xff" * 8, T0),
                   ("lunabase/moon/n01/status", b'{"state": "online"}', T0)])
    assert p.snapshot()["totals"]["sink_errors"] == {"on_packets": 1, "on_status": 1, "on_rejected": 1}
    assert "sink bug" in caplog.text
    # the archive and the next sink still got everything
    assert archive.count_raw() == 1 and good.packets == [("n01", 0, True)]
    assert good.status == [{"state": "online"}] and good.rejected


def test_gap_filled_by_replay(parser_cls, tmp_path) -> None:
    archive = open_archive(f"sqlite:///{tmp_path}/a.db")
    p = Pipeline(archive, parser=parser_cls(archive.dictionary))
    def t(i: int) -> int:
        return unix_to_ticks(T0 + i)

    p.process([("lunabase/moon/n01/tm", b"".join(hk(i, t(i)) for i in (0, 1, 2, 6, 7)), T0)])
    s = p.snapshot()["links"]["moon/n01"]
    assert s["gaps"] == 1 and s["missing"] == 3
    p.process([("lunabase/moon/n01/tm", b"".join(hk(i, t(i)) for i in (3, 4)), T0)])
    s = p.snapshot()["links"]["moon/n01"]
    assert s["missing"] == 1 and s["filled"] == 2
    # sequence wrap-around is not a gap
    p.process([("lunabase/moon/n02/tm", b"".join(hk(i % ccsds.SEQ_MOD, t(i)) for i in range(ccsds.SEQ_MOD - 4, ccsds.SEQ_MOD + 6)), T0)])
    assert p.snapshot()["links"]["moon/n02"]["gaps"] == 0
    # a node reboot (counter back to 0, newer time tag) is not a gap either
    p.process([("lunabase/moon/n02/tm", hk(0, t(20000)), T0)])
    s2 = p.snapshot()["links"]["moon/n02"]
    assert s2["gaps"] == 0 and s2["seq_resets"] == 1
    assert np.isclose(p.snapshot()["totals"]["fresh"], 18)


@pytest.mark.parametrize("protocol", [4, 5])
async def test_shared_subscription_splits_the_load(parser_cls, broker: Mosquitto, tmp_path, protocol: int) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    archives = [open_archive(url), open_archive(url)]  # two writers on one WAL file (busy_timeout)
    workers = [IngestWorker(a, broker.host, broker.port, client_id=f"ing-share-{k}", share="ingest",
                            protocol=protocol, parser=parser_cls(a.dictionary)) for k, a in enumerate(archives)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for w in workers:
        await asyncio.wait_for(w.connected.wait(), 10)
    async with aiomqtt.Client(broker.host, broker.port, identifier="pub-share") as pub:
        for m in range(200):
            await pub.publish(topics.topic("moon", f"n{m % 4:02d}", "tm"),
                              hk(m // 4, unix_to_ticks(T0 + m)), qos=1)
    await wait_for(lambda: sum(w.stats()["totals"]["fresh"] for w in workers) >= 200)
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks)
    shares = [w.stats()["totals"]["fresh"] for w in workers]
    assert sum(shares) == 200 and min(shares) > 0, shares
    assert archives[0].count_raw() == 200
    for a in archives:
        a.close()


async def test_archive_failure_acks_nothing_and_recovers(parser_cls, broker: Mosquitto, tmp_path) -> None:
    archive = open_archive(f"sqlite:///{tmp_path}/a.db")
    real = archive.transaction
    fail = [3]

    def flaky():
        if fail[0] > 0:
            fail[0] -= 1
            raise OSError("disk on fire")
        return real()

    archive.transaction = flaky  # type: ignore[method-assign]
    w = IngestWorker(archive, broker.host, broker.port, client_id="ing-flaky", parser=parser_cls(archive.dictionary))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 10)
    async with aiomqtt.Client(broker.host, broker.port, identifier="pub-flaky") as pub:
        for i in range(5):
            await pub.publish(topics.topic("moon", "n01", "tm"), hk(i, unix_to_ticks(T0 + i)), qos=1)
    await wait_for(lambda: archive.count_raw() == 5, 30)
    w.stop()
    await asyncio.wait_for(task, 10)
    assert w.connections >= 2 and archive.count_raw() == 5
    archive.close()


@pytest.mark.parametrize("batch_reader", [True, False], ids=["fast-path", "aiomqtt"])
async def test_a_retained_status_replayed_on_subscribe_is_marked(parser_cls, broker: Mosquitto, tmp_path,
                                                                  batch_reader: bool) -> None:
    """The retain flag as delivered: a birth the broker replays to a new subscription (sent
    before ingest connected) reaches the sinks marked RETAINED; one published now does not,
    nor can a node set the mark itself."""
    from ground.ingest import RETAINED

    archive = open_archive(f"sqlite:///{tmp_path}/a.db")
    st = topics.topic("moon", f"n0{int(batch_reader)}", "status")
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"pub-ret-{batch_reader}") as pub:
        await pub.publish(st, json.dumps({"state": "online", "boot": 1}), qos=1, retain=True)
        sink = RecordingSink()
        w = IngestWorker(archive, broker.host, broker.port, client_id=f"ing-ret-{batch_reader}", sinks=[sink],
                         parser=parser_cls(archive.dictionary), batch_reader=batch_reader)
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(w.connected.wait(), 10)
        await wait_for(lambda: len(sink.status) >= 1)
        await pub.publish(st, json.dumps({"state": "online", "boot": 2, RETAINED: True}), qos=1, retain=True)
        await wait_for(lambda: len(sink.status) >= 2)
        await pub.publish(st, b"", qos=1, retain=True)  # (clear it for the broker's next test)
    w.stop()
    await asyncio.wait_for(task, 10)
    assert sink.status[0]["boot"] == 1 and sink.status[0].get(RETAINED) is True
    assert sink.status[1]["boot"] == 2 and RETAINED not in sink.status[1]  # live, and not the node's to say
    archive.close()

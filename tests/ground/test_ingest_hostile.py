"""Hostile input to ingest: one message must never stop the messages after it.

The regression test for the status that jammed all ingest (issue 12: a deeply nested
status JSON made ``json.loads`` raise RecursionError, the batch was never acknowledged and
the broker redelivered it for ever), then hypothesis feeding the pipeline hostile
payloads, statuses and topics: after each, a good packet is archived.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ground.archive import open_archive, unix_to_ticks
from ground.ingest import INTERNAL, QUARANTINE_REASONS, IngestWorker, Pipeline, check_status
from ground.ingest.testing import hk
from sim.mosquitto import Mosquitto
from wire import ccsds, topics

T0 = 1_780_000_000.0
DEEP = b'{"state":"online","x":' + b"[" * 1000 + b"]" * 1000 + b"}"


def test_deep_status_is_quarantined_not_raised(parser_cls, tmp_path) -> None:
    """The issue's in-process reproduction: process() used to raise RecursionError."""
    a = open_archive(f"sqlite:///{tmp_path}/p.db")
    p = Pipeline(a, parser=parser_cls(a.dictionary))
    p.process([("lunabase/s/n/status", DEEP, time.time()),
               ("lunabase/s/n/tm", hk(1, unix_to_ticks(T0 + 1)), time.time())])
    assert a.count_raw() == 1
    assert p.quarantine == {"too_deep": 1}
    (q,) = a.quarantined()
    assert q["topic"] == "lunabase/s/n/status" and q["reason"] == "too_deep"
    assert q["size"] == len(DEEP) and q["sample"] == DEEP[:256]
    assert p.snapshot()["links"]["s/n"]["errors"]["too_deep"]["count"] == 1
    a.close()


async def test_deep_status_does_not_jam_ingest(parser_cls, broker: Mosquitto, tmp_path) -> None:
    """Through a real broker: the packets after the hostile status are archived, once each."""
    a = open_archive(f"sqlite:///{tmp_path}/a.db")
    w = IngestWorker(a, broker.host, broker.port, client_id="ing-deep", parser=parser_cls(a.dictionary))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 10)
    async with aiomqtt.Client(broker.host, broker.port, identifier="pub-deep") as pub:
        await pub.publish(topics.topic("moon", "n01", "status"), DEEP, qos=1)
        for i in range(30):
            await pub.publish(topics.topic("moon", "n01", "tm"), hk(i, unix_to_ticks(T0 + i)), qos=1)
    deadline = time.monotonic() + 20
    while a.count_raw() < 30 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    w.stop()
    await asyncio.wait_for(task, 10)
    assert a.count_raw() == 30
    assert w.pipeline.quarantine == {"too_deep": 1}
    assert w.connections == 1, "a hostile message must not cost the session"
    a.close()


@pytest.mark.parametrize("payload,reason", [
    (b"[1, 2]", "bad_status"),
    (b"\xff\xfe{", "bad_status"),
    (b'{"state": NaN}', "bad_status"),
    (b'{"state": "online", "hk_period": "abc"}', "bad_status"),
    (b'{"state": "online", "hk_period": -1}', "bad_status"),
    (b'{"state": "online", "boot": true}', "bad_status"),
    (b'{"state": "on\\u0000line"}', "bad_status"),
    (b'{"state": "\\ud800"}', "bad_status"),
    (b'{"state": "online", "pad": "' + b"x" * 20000 + b'"}', "oversized"),
    (b'{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}', "too_deep"),
])
def test_status_checks(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as e:
        check_status(payload)
    assert getattr(e.value, "reason", None) == reason


def test_valid_status_passes() -> None:
    body = {"state": "asleep", "mode": "NIGHT", "boot": 3, "next_contact": 8.1e8, "hk_period": 10,
            "dict_crc": 12345, "fw": "0.4.1", "extra": {"a": [1, 2, {"b": None}]}}
    assert check_status(json.dumps(body).encode()) == body


def test_topics_and_unknown_nodes_share_one_bucket(parser_cls, tmp_path) -> None:
    a = open_archive(f"sqlite:///{tmp_path}/p.db")
    p = Pipeline(a, known={("moon", "n01")}, parser=parser_cls(a.dictionary))
    now = time.time()
    batch = [(f"lunabase/moon/x{i}/tm", hk(i, unix_to_ticks(T0 + i)), now) for i in range(50)]
    batch += [(f"odd/{i}/topic", b"x", now) for i in range(50)]
    batch += [("lunabase/moon/n01/tm", hk(1, unix_to_ticks(T0 + 1)), now), ("lunabase/MOON/N\x00/tm", b"x", now),
              ("lunabase/moon/n01/cmd", b"x", now), ("lunabase/moon/n01/tm/" + "x" * 500, b"x", now),
              ("lunabase/moon/n01/tm", b"", now), ("lunabase/moon/n01/tm", b"\x00" * 300_000, now)]
    p.process(batch)
    assert set(p.links) == {("moon", "n01"), ("?", "?")}
    assert p.quarantine == {"unknown_node": 50, "bad_topic": 53, "empty": 1, "oversized": 1}
    assert a.count_raw() == 1
    stored = a.quarantined(limit=1000)
    assert all(len(q["sample"]) <= 256 for q in stored) and "\x00" not in "".join(q["topic"] for q in stored)
    a.close()


def test_quarantine_storage_is_rate_limited(parser_cls, tmp_path) -> None:
    a = open_archive(f"sqlite:///{tmp_path}/p.db")
    p = Pipeline(a, quarantine_per_min=5, parser=parser_cls(a.dictionary))
    now = time.time()
    p.process([("lunabase/moon/n01/status", b"not json", now)] * 40)
    assert p.quarantine == {"bad_status": 40} and p.quarantine_stored == 5
    assert len(a.quarantined(limit=100)) == 5
    a.close()


class _Exploding:
    """A parser wrapper that raises on one marked payload, like a parser bug would."""

    def __init__(self, parser) -> None:
        self.inner = parser

    def parse(self, data):
        if b"BOOM" in bytes(data):
            raise RuntimeError("parser bug")
        return self.inner.parse(data)


def test_any_exception_quarantines_only_its_message(parser_cls, tmp_path) -> None:
    a = open_archive(f"sqlite:///{tmp_path}/p.db")
    p = Pipeline(a, parser=parser_cls(a.dictionary))
    p.parser = _Exploding(p.parser)
    now = time.time()
    batch = [("lunabase/moon/n01/tm", hk(i, unix_to_ticks(T0 + i)), now) for i in range(5)]
    batch.insert(2, ("lunabase/moon/n01/tm", hk(99, unix_to_ticks(T0 + 99)) + b"BOOM", now))
    p.process(batch)
    assert a.count_raw() == 5
    assert p.quarantine == {INTERNAL: 1} and p.isolated_batches == 1
    (q,) = a.quarantined()
    assert "RuntimeError: parser bug" in q["detail"]
    a.close()


def test_archive_failure_still_raises(parser_cls, tmp_path) -> None:
    """An archive that cannot write must not look like bad messages: nothing acknowledged."""
    a = open_archive(f"sqlite:///{tmp_path}/p.db")
    p = Pipeline(a, parser=parser_cls(a.dictionary))

    def broken():
        raise OSError("disk full")

    a.transaction = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        p.process([("lunabase/moon/n01/tm", hk(1, unix_to_ticks(T0 + 1)), time.time())])
    assert p.failed_batches == 1 and p.quarantine == {}


# -- fuzz ---------------------------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                         max_size=4), max_leaves=20)
status_payload = st.one_of(
    st.binary(max_size=300),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["state", "mode", "boot", "hk_period", "next_contact", "fw", "x"]),
                    json_value, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(15_000, 40_000).map(lambda n: b'{"state":"online","p":"' + b"x" * n + b'"}'),
)
odd_topic = st.one_of(
    st.text(max_size=200),
    st.builds(lambda s, n, k: f"lunabase/{s}/{n}/{k}", st.text(max_size=40), st.text(max_size=40),
              st.sampled_from(["tm", "status", "cmd", "tm/x", "", "+", "#"])),
)
tm_payload = st.one_of(st.binary(max_size=600), st.binary(min_size=1, max_size=40).map(lambda b: b * 7000))


@pytest.fixture(scope="module")
def fuzz_pipeline(parser_cls, tmp_path_factory):
    a = open_archive(f"sqlite:///{tmp_path_factory.mktemp('fz')}/f.db")
    yield Pipeline(a, quarantine_per_min=1000, known={("moon", "good"), ("moon", "fz"), ("moon", "n01")}, parser=parser_cls(a.dictionary)), [0]
    a.close()


def _then_good_packet_is_archived(p: Pipeline, counter: list[int]) -> None:
    counter[0] += 1
    i = counter[0]
    before = p.archive.count_raw()
    p.process([("lunabase/moon/good/tm", hk(i % ccsds.SEQ_MOD, unix_to_ticks(T0 + i)), time.time())])
    assert p.archive.count_raw() == before + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=status_payload)
def test_fuzz_status(fuzz_pipeline, payload: bytes) -> None:
    p, counter = fuzz_pipeline
    n_before = sum(p.quarantine.values()) + p.links.get(("moon", "fz"), _Zero).status_messages
    p.process([("lunabase/moon/fz/status", payload, time.time())])
    assert sum(p.quarantine.values()) + p.links[("moon", "fz")].status_messages == n_before + 1
    assert set(p.quarantine) <= set(QUARANTINE_REASONS)
    _then_good_packet_is_archived(p, counter)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=odd_topic, payload=tm_payload)
def test_fuzz_topics_and_payloads(fuzz_pipeline, topic: str, payload: bytes) -> None:
    p, counter = fuzz_pipeline
    p.process([(topic, payload, time.time()), ("lunabase/moon/n01/tm", payload[:300], time.time())])
    assert set(p.links) <= {("moon", "good"), ("moon", "fz"), ("moon", "n01"), ("?", "?")}
    _then_good_packet_is_archived(p, counter)


class _Zero:
    status_messages = 0


def test_rate_limited_logs_count_what_they_hold_back(caplog) -> None:
    import logging

    from ground.ratelog import RateLimitedLog, RateLimitFilter

    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("lb.test.rl"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="lb.test.rl"):
        for _ in range(1000):
            rl.warning("bad_status", "status refused")
        rl.warning("too_deep", "too deep")
        now[0] = 11.0
        rl.warning("bad_status", "status refused")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["status refused", "too deep", "status refused (+999 similar suppressed in 10 s)"]
    assert rl.suppressed == {"bad_status": 999}
    f = RateLimitFilter(10.0, clock=lambda: now[0])
    lg = logging.getLogger("lb.test.rf")
    lg.addFilter(f)
    with caplog.at_level(logging.ERROR, logger="lb.test.rf"):
        caplog.clear()
        for _ in range(500):
            lg.error("socket.accept() out of system resource")
    assert len(caplog.records) == 1 and f.suppressed == {"socket.accept() out of system resource": 499}

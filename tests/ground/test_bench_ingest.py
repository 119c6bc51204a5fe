"""`lunabase bench ingest`'s load generator and one small case end to end (figures are
printed by the bench, never asserted here: the machine is shared and noisy)."""

from __future__ import annotations

import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from lunabase.bench import ingest as bench
from sim.mosquitto import Mosquitto
from wire import ccsds


def test_raw_publisher_frames_and_packet_ids_wrap():
    pub = bench._RawPublisher.__new__(bench._RawPublisher)
    pub._pid = 65534
    a, b, c = (pub.frame(b"t/x", b"\x01\x02") for _ in range(3))
    # PUBLISH QoS 1, remaining length, topic, packet id (65535, then 1: 0 is not a valid id), payload
    assert a == b"\x32\x09\x00\x03t/x\xff\xff\x01\x02"
    assert b[7:9] == b"\x00\x01" and c[7:9] == b"\x00\x02"
    assert bench._varlen(127) == b"\x7f" and bench._varlen(128) == b"\x80\x01" and bench._varlen(16384) == b"\x80\x80\x01"


def test_raw_publisher_delivers_every_message_once_at_qos1():
    got: list[bytes] = []
    done = threading.Event()
    total = 3000
    with Mosquitto(persistence=False) as broker:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{os.getpid()}")

        def on_message(c, u, m):
            got.append(m.payload)
            if len(got) >= total:
                done.set()

        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe(f"lunabase/{bench.SITE}/+/tm", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        base = bench._now_ticks()
        bench.publisher(broker.port, total, 1, 0, base, None)
        assert done.wait(30), f"{len(got)} of {total} messages arrived"
        sub.loop_stop()
        sub.disconnect()
    assert len(got) == total
    seqs = sorted(int.from_bytes(p[2:4], "big") & ccsds.SEQ_MASK for p in got)
    assert seqs == sorted(s for _ in range(bench.NODES) for s in range(total // bench.NODES))


@pytest.mark.slow
def test_bench_ingest_case_archives_everything_once(tmp_path):
    with Mosquitto(persistence=False) as broker:
        cpus = sorted(os.sched_getaffinity(0))
        res = bench.run_case(broker.port, "lunabase", 2000, 20, 0, cpus, tmp_path, 60)
        lat = bench.run_case(broker.port, "lunabase", 500, 1, 1000.0, cpus, tmp_path, 60)
    assert (res["archived"], res["lost"], res["duplicates"]) == (2000, 0, 0)
    assert (lat["archived"], lat["lost"], lat["duplicates"]) == (500, 0, 0)
    assert lat["latency_ms"]["p99"] >= lat["latency_ms"]["p50"] > 0

"""The unmodified firmware on the MicroPython unix port against a real mosquitto."""

from __future__ import annotations

import calendar
import struct
import time

import pytest

from wire import ccsds, defs

from firmware_helpers import KEY, node_config, seq_gaps, wait_for


def hk_values(ground, field: str) -> list[int]:
    names = ["uptime", "boot_count", "reset_cause", "mode", "free_heap", "loop_lag", "journal_depth",
             "journal_dropped", "link_state", "reconnects", "tc_accepted", "tc_rejected", "clock_offset",
             "clock_drift", "next_contact", "cpu_temp", "hk_period", "flags"]
    i = names.index(field)
    return [struct.unpack_from(defs.HK_FMT, raw, 12)[i] for _, _, _, raw in ground.by_apid(defs.APID_HK)]


def assert_contiguous(ground, node, apids=(defs.APID_HK, defs.APID_SEISMIC)) -> dict[int, int]:
    """Per-APID sequence counts have no gap after de-duplication; returns counts."""
    u = ground.unique()
    counts = {}
    for apid in apids:
        seqs = [s for s, _ in sorted(u.get(apid, []), key=lambda x: x[1])]
        assert seqs, f"no packets of APID {apid}\n{node.log()}"
        gaps = seq_gaps(seqs)
        assert gaps == 0, f"APID {apid}: {gaps} sequence counts missing in {seqs}\n{node.log()}"
        counts[apid] = len(seqs)
    return counts


def test_node_publishes_decodable_telemetry_and_heap_is_flat(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= 24, 90, "24 HK packets", node)
    assert not ground.rejected, ground.rejected
    apids = {a for a, *_ in ground.packets}
    assert {defs.APID_HK, defs.APID_POWER, defs.APID_THERMAL, defs.APID_RADIATION, defs.APID_SEISMIC,
            defs.APID_EVENT} <= apids, apids
    # several packets share one MQTT message (containers)
    assert len(ground.packets) > ground.tm_messages
    births = [s for t, s, r in ground.status if s["state"] == "online"]
    assert births and births[0]["boot"] == 1 and births[0]["dict_crc"] == defs.DICT_CRC
    # free heap in steady state (after gc.collect in every HK): no downward trend
    heap = hk_values(ground, "free_heap")[4:]
    first, last = heap[: len(heap) // 2], heap[len(heap) // 2 :]
    assert min(last) >= min(first) - 256, f"free heap trends down: {heap}"
    assert min(heap) > 3000, heap
    node.kill()
    # the retained birth is what a late subscriber sees... until the will replaces it
    wait_for(lambda: any(s["state"] == "offline" for _, s, _ in ground.status), 30, "last will (offline)")


def test_broker_restart_loses_nothing(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= 6, 60, "HK before the restart", node)
    broker.stop()
    time.sleep(4)  # node keeps producing into its journal
    broker.start()
    n0 = len(ground.by_apid(defs.APID_HK))
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= n0 + 14, 90, "HK after the restart", node)
    time.sleep(1.5)
    counts = assert_contiguous(ground, node)
    assert counts[defs.APID_HK] >= 20
    hk = hk_values(ground, "reconnects")
    assert max(hk) >= 1, f"node never reconnected: {hk}\n{node.log()}"
    # duplicates only as QoS 1 redelivery: identical bytes for identical (apid, seq, ticks)
    raw = {}
    for a, s, t, b in ground.packets:
        assert raw.setdefault((a, s, t), b) == b


def test_node_sigkill_restart_loses_no_journaled_packet(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= 6, 60, "HK before the kill", node)
    node.kill()
    node.start()
    wait_for(lambda: any(s["boot"] == 2 and s["state"] == "online" for _, s, _ in ground.status), 60, "second boot", node)
    n0 = len(ground.by_apid(defs.APID_HK))
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= n0 + 8, 60, "HK after the restart", node)
    time.sleep(1)
    assert_contiguous(ground, node)
    causes = hk_values(ground, "reset_cause")
    assert defs.RESET_CAUSE_HARD in causes, causes  # the kill is seen as a hard reset


@pytest.mark.slow
def test_outage_longer_than_journal_reports_exact_drop(broker, ground, make_node):
    cfg = node_config(broker.port, journal={"segment_bytes": 2048, "segments": 3})
    node = make_node(cfg).start()
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= 4, 60, "HK before the outage", node)
    broker.stop()
    time.sleep(16)  # ~1 KB/s of telemetry against a 6 KB journal
    broker.start()
    wait_for(lambda: any(e for e in events(ground) if e[0] == defs.EVENT_JOURNAL_DROPPED), 60,
             "JOURNAL_DROPPED event", node)
    n0 = len(ground.by_apid(defs.APID_HK))
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= n0 + 6, 60, "HK after the outage", node)
    time.sleep(1)
    u = ground.unique()
    gap = 0
    for lst in u.values():
        seqs = [s for s, _ in sorted(lst, key=lambda x: x[1])]
        gap += seq_gaps(seqs)
    dropped = max(hk_values(ground, "journal_dropped"))
    # arg0 = dropped this time, arg1 = total (an event may itself fall in a dropped segment)
    ev = max(e[4] for e in events(ground) if e[0] == defs.EVENT_JOURNAL_DROPPED)
    assert dropped > 0, node.log()
    assert gap == dropped == ev, f"ground gap {gap}, HK journal_dropped {dropped}, events {ev}\n{node.log()}"


def events(ground) -> list[tuple]:
    return [struct.unpack_from(defs.EVENT_FMT, raw, 12) for *_, raw in ground.by_apid(defs.APID_EVENT)]


def acks(ground) -> list[tuple]:
    return [struct.unpack_from(defs.ACK_FMT, raw, 12) for *_, raw in ground.by_apid(defs.APID_ACK)]


def tc(op: int, counter: int, args: bytes = b"", key: bytes = KEY, seq: int = 0, node: bytes = b"n01",
       not_before: int = 0, not_after: int = 0) -> bytes:
    return ccsds.build_tc(key, node, defs.TC_APID, seq, op, counter, args, 0, 0, 0, not_before, not_after)


def test_telecommands_authenticated_and_executed(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: any(s["state"] == "online" for _, s, _ in ground.status), 60, "birth", node)
    time.sleep(0.5)
    ground.send_tc("n01", tc(defs.OP_PING, 10, seq=1))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 10 and a[2] == defs.ACK_STAGE_EXECUTED], 30, "PING executed", node)
    # forged: wrong key
    ground.send_tc("n01", tc(defs.OP_PING, 11, key=b"\x55" * 32, seq=2))
    # replayed: the same counter again
    ground.send_tc("n01", tc(defs.OP_PING, 10, seq=3))
    wait_for(lambda: len([a for a in acks(ground) if a[2] == defs.ACK_STAGE_REJECTED]) >= 2, 30, "2 rejections", node)
    rej = {(a[0], a[3]) for a in acks(ground) if a[2] == defs.ACK_STAGE_REJECTED}
    assert (11, defs.ACK_REASON_BAD_MAC) in rej and (10, defs.ACK_REASON_REPLAY) in rej, rej
    ev = [e for e in events(ground) if e[0] == defs.EVENT_TC_REJECTED]
    assert {e[3] for e in ev} >= {defs.ACK_REASON_BAD_MAC, defs.ACK_REASON_REPLAY}, ev
    # SET_RATE: HK every 200 ms instead of 500 ms
    ground.send_tc("n01", tc(defs.OP_SET_RATE, 12, struct.pack(defs.ARGS_SET_RATE, defs.SENSOR_HK, 200), seq=4))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 12 and a[2] == defs.ACK_STAGE_EXECUTED], 30, "SET_RATE", node)
    t0 = max(p[2] for p in ground.by_apid(defs.APID_HK))
    wait_for(lambda: len([p for p in ground.by_apid(defs.APID_HK) if p[2] > t0]) >= 15, 30, "faster HK", node)
    later = sorted(p[2] for p in ground.by_apid(defs.APID_HK) if p[2] > t0)[-10:]
    period = (later[-1] - later[0]) / 9 / 65536
    assert period < 0.35, f"HK period {period:.3f} s after SET_RATE 200 ms"
    # TIME_SYNC: jump the node clock to 2030-01-01 (wire-epoch seconds)
    target = calendar.timegm((2030, 1, 1, 0, 0, 0)) - ccsds.EPOCH_UNIX
    ground.send_tc("n01", tc(defs.OP_TIME_SYNC, 13, struct.pack(defs.ARGS_TIME_SYNC, target, 0), seq=5))
    wait_for(lambda: [p for p in ground.by_apid(defs.APID_HK) if target <= p[2] >> 16 < target + 60], 30,
             "HK time-tagged after TIME_SYNC", node)
    ok = [a for a in acks(ground) if a[0] == 13]
    assert [a[2] for a in ok] == [defs.ACK_STAGE_ACCEPTED, defs.ACK_STAGE_EXECUTED], ok
    assert any(e[0] == defs.EVENT_TIME_SYNC for e in events(ground))
    # the counter survives a reset: after a kill the old command is still a replay
    node.kill()
    node.start()
    wait_for(lambda: any(s["boot"] == 2 and s["state"] == "online" for _, s, _ in ground.status), 60, "reboot", node)
    ground.send_tc("n01", tc(defs.OP_PING, 13, seq=6))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 13 and a[3] == defs.ACK_REASON_REPLAY], 30,
             "replay rejected after restart", node)


def test_night_mode_announces_sleep_without_will(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: any(s["state"] == "online" for _, s, _ in ground.status), 60, "birth", node)
    ground.send_tc("n01", tc(defs.OP_SET_MODE, 20, struct.pack(defs.ARGS_SET_MODE, defs.MODE_NIGHT, 0), seq=1))
    asleep = wait_for(lambda: [s for _, s, _ in ground.status if s["state"] == "asleep"], 40, "asleep status", node)
    s = asleep[0]
    assert s["mode"] == "NIGHT" and s["next_contact"] > 0, s
    # a clean DISCONNECT: no "offline" will follows the sleep announcement
    time.sleep(1.5)
    after = [x["state"] for _, x, _ in ground.status]
    assert after[after.index("asleep"):].count("offline") == 0, after
    # it wakes for the next contact and goes back to sleep (the ground sees a cycle)
    wait_for(lambda: len([x for _, x, _ in ground.status if x["state"] == "asleep"]) >= 2, 60, "second sleep", node)
    modes = set(hk_values(ground, "mode"))
    assert defs.MODE_NIGHT in modes, modes
    # heartbeats taken while asleep say when the node will be back
    assert any(v > 0 for v in hk_values(ground, "next_contact")), hk_values(ground, "next_contact")


def test_tc_window_node_id_and_lost_counter(broker, ground, make_node):
    """A node whose counter file is corrupt refuses every TC until TC_RESYNC(nonce); then a
    TC for another node, an expired one and an early one are refused with their reasons."""
    node = make_node(node_config(broker.port))
    (node.dir / "data").mkdir(parents=True, exist_ok=True)
    (node.dir / "data" / "tc").write_bytes(b"\xff\x00garbage")  # flash corruption
    node.start()
    lost = wait_for(lambda: [e for e in events(ground) if e[0] == defs.EVENT_TC_COUNTER_LOST], 60, "counter lost", node)
    nonce = lost[0][3]
    assert nonce > 0 and lost[0][1] == defs.SEVERITY_CRITICAL
    # refused, whatever the counter, even a resync with the wrong nonce
    ground.send_tc("n01", tc(defs.OP_PING, 4_000_000_000, seq=1))
    ground.send_tc("n01", tc(defs.OP_TC_RESYNC, 11, struct.pack(defs.ARGS_TC_RESYNC, nonce ^ 1), seq=2))
    wait_for(lambda: len([a for a in acks(ground) if a[3] == defs.ACK_REASON_COUNTER_LOST]) == 2, 30, "refusals", node)
    assert not [a for a in acks(ground) if a[2] != defs.ACK_STAGE_REJECTED]
    assert (node.dir / "data" / "tc").read_bytes() == b"\xff\x00garbage"  # nothing consumed
    told = [e for e in events(ground) if e[0] == defs.EVENT_TC_COUNTER_LOST]
    assert {e[4] for e in told} >= {4_000_000_000 - 2**32, 11} and {e[3] for e in told} == {nonce}, told
    # the resync with the nonce re-arms it: its counter is the new floor
    ground.send_tc("n01", tc(defs.OP_TC_RESYNC, 100, struct.pack(defs.ARGS_TC_RESYNC, nonce), seq=3))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 100 and a[2] == defs.ACK_STAGE_EXECUTED], 30, "resync", node)
    assert (node.dir / "data" / "tc").read_bytes() == b"100"
    now = int(time.time()) - ccsds.EPOCH_UNIX  # the sim board's clock: host time in wire-epoch seconds
    sends = [
        (tc(defs.OP_PING, 50, seq=4), 50, defs.ACK_REASON_REPLAY),
        (tc(defs.OP_PING, 101, seq=5, node=b"n02"), 101, defs.ACK_REASON_WRONG_NODE),
        (tc(defs.OP_PING, 102, seq=6, not_after=now - 3600), 102, defs.ACK_REASON_EXPIRED),
        (tc(defs.OP_PING, 103, seq=7, not_before=now + 3600), 103, defs.ACK_REASON_NOT_YET_VALID),
    ]
    for data, *_ in sends:
        ground.send_tc("n01", data)
    ground.send_tc("n01", tc(defs.OP_PING, 104, seq=8, not_before=now - 3600, not_after=now + 3600))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 104 and a[2] == defs.ACK_STAGE_EXECUTED], 30, "windowed PING", node)
    rej = {a[0]: a[3] for a in acks(ground) if a[2] == defs.ACK_STAGE_REJECTED and a[0] in (50, 101, 102, 103)}
    assert rej == {c: r for _, c, r in sends}, rej
    # the early TC consumed its counter: it can never run, not even once its window opens
    ground.send_tc("n01", sends[3][0])
    wait_for(lambda: len([a for a in acks(ground) if a[0] == 103]) == 2, 30, "second refusal", node)
    assert [a[3] for a in acks(ground) if a[0] == 103] == [defs.ACK_REASON_NOT_YET_VALID, defs.ACK_REASON_REPLAY]
    assert (node.dir / "data" / "tc").read_bytes() == b"104"
    ev = {e[3] for e in events(ground) if e[0] == defs.EVENT_TC_REJECTED}
    assert ev >= {defs.ACK_REASON_WRONG_NODE, defs.ACK_REASON_EXPIRED, defs.ACK_REASON_NOT_YET_VALID}, ev

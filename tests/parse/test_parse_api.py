"""The parser contract, run on both twins (the `twin` fixture is parametrized)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from parse_compare import assert_invariants
from parse_helpers import make_packet, random_packet

import ground.parse as gp
from ground.parse._common import BAD_CRC, BAD_LENGTH, BAD_TYPE, BAD_VERSION, TRUNCATED, UNKNOWN_APID
from wire.dictionary import load

D = load()
HK = D.packet("HK")
SEIS = D.packet("SEISMIC")


def hk(seq=0, fill=0x11, coarse=100, fine=0):
    return make_packet(HK.apid, seq, bytes([fill]) * (HK.length - 14), coarse, fine)


def test_dispatcher_exports_both_twins():
    assert gp.PyParser.implementation == "python"
    assert gp.CParser is not None, gp.CYTHON_ERROR
    assert gp.CParser.implementation == "cython"
    assert gp.Parser.implementation == gp.IMPLEMENTATION


def test_empty(Parser):
    r = Parser().parse(b"")
    assert r.count == 0 and r.consumed == 0 and r.rejected == [] and r.tables == {}
    assert r.apid.dtype == np.uint16 and r.seq.dtype == np.uint16
    assert r.ticks.dtype == np.int64 and r.offset.dtype == np.int64 and r.length.dtype == np.int32


def test_one_hk_decodes_to_engineering_values(Parser):
    import struct

    vals = (3600, 7, 2, 1, 123456, 15, 3, 9, 2, 1, 4, 0, -250, -1234, 60, 2150, 1, 5)
    payload = struct.pack(HK.payload_format, *vals)
    data = make_packet(HK.apid, 42, payload, coarse=1000, fine=0x4000)
    r = Parser().parse(data)
    assert r.count == 1 and r.rejected == [] and r.consumed == len(data)
    assert r.apid.tolist() == [1] and r.seq.tolist() == [42] and r.length.tolist() == [56]
    assert r.ticks.tolist() == [(1000 << 16) | 0x4000]
    t = r.tables[1]
    assert t.name == "HK" and len(t) == 1 and t.rows.tolist() == [0]
    assert t.column("uptime")[0] == 3600.0
    assert t.column("clock_offset")[0] == -250.0
    assert t.column("clock_drift")[0] == -1234 * 0.01
    assert t.column("cpu_temp")[0] == 2150 * 0.01
    assert t.values.shape == (1, len(HK.numeric_fields))


def test_seismic_samples_go_straight_into_int16_array(Parser):
    import struct

    samples = [((i * 77) % 65536) - 32768 for i in range(300)]
    payload = struct.pack(">H300h", 1000, *samples)
    data = make_packet(SEIS.apid, 1, payload) * 3
    r = Parser().parse(data)
    t = r.tables[SEIS.apid]
    assert t.raw_samples.dtype == np.int16 and t.raw_samples.shape == (3, 100, 3)
    assert t.raw_samples[2].ravel().tolist() == samples
    assert t.column("rate").tolist() == [1000.0] * 3
    assert np.allclose(t.samples, t.raw_samples * 0.01)


def test_event_text_is_stripped(Parser):
    import struct

    ev = D.packet("EVENT")
    payload = struct.pack(ev.payload_format, 1, 0, 0, -5, 6, b"hello")
    r = Parser().parse(make_packet(ev.apid, 0, payload))
    assert r.tables[ev.apid].texts == {"text": [b"hello"]}


def test_mixed_container_rows_point_back(Parser):
    rnd = random.Random(5)
    pkts = [random_packet(rnd) for _ in range(50)]
    data = b"".join(pkts)
    r = Parser().parse(data)
    assert r.count == 50 and r.rejected == []
    assert r.offset.tolist() == [sum(map(len, pkts[:i])) for i in range(50)]
    for ap, t in r.tables.items():
        assert (r.apid[t.rows] == ap).all()
    assert sum(len(t) for t in r.tables.values()) == 50


@pytest.mark.parametrize(
    "mutate, reasons",
    [
        (lambda p: b"\xe0" + p[1:], [(0, None, BAD_VERSION)]),  # version bits 7
        (lambda p: p[:-1] + bytes([p[-1] ^ 1]), [(0, None, BAD_CRC)]),
        (lambda p: p[:30], [(0, 30, TRUNCATED)]),
        (lambda p: p[:4], [(0, 4, TRUNCATED)]),
    ],
)
def test_bad_packet_is_resynced_one_range(Parser, mutate, reasons):
    good = hk(1)
    bad = mutate(hk(0))
    data = bad + good if len(bad) == len(hk()) else bad
    r = Parser().parse(data)
    start, end, reason = reasons[0]
    assert r.rejected[0].start == start and r.rejected[0].reason == reason
    assert r.rejected[0].end == (end if end is not None else len(bad))
    if len(bad) == len(hk()):
        assert r.count == 1 and r.offset.tolist() == [len(bad)]
    assert_invariants(r, len(data))


def test_crc_proven_packets_are_skipped_whole(Parser):
    unknown = make_packet(0x123, 0, b"\x00" * 20)
    tc = make_packet(HK.apid, 0, b"\x00" * 42, ptype=1)  # right length but a TC
    wrong_len = make_packet(HK.apid, 0, b"\x00" * 10)
    data = unknown + hk(1) + tc + wrong_len + hk(2)
    r = Parser().parse(data)
    assert r.count == 2
    a, b_, c = len(unknown), len(unknown) + 56, len(unknown) + 56 + len(tc)
    assert r.rejected == [
        gp.Rejected(0, a, UNKNOWN_APID),
        gp.Rejected(b_, c, BAD_TYPE),
        gp.Rejected(c, c + len(wrong_len), BAD_LENGTH),
    ]
    assert r.reasons == {UNKNOWN_APID: 1, BAD_TYPE: 1, BAD_LENGTH: 1}


def test_garbage_run_is_one_range_with_first_reason(Parser):
    garbage = b"\xff" * 7 + b"\x00" * 3
    data = garbage + hk(1) + b"\xee\xee"
    r = Parser().parse(data)
    assert r.count == 1
    assert r.rejected == [gp.Rejected(0, 10, BAD_VERSION), gp.Rejected(66, 68, TRUNCATED)]
    assert r.rejected_bytes == {BAD_VERSION: 10, TRUNCATED: 2}
    assert_invariants(r, len(data))


def test_max_length_bound(Parser):
    big = make_packet(0x7FE, 0, b"\x00" * 2000)
    r = Parser().parse(big)
    assert r.rejected[0].reason == BAD_LENGTH  # longer than tm_max_length: not trusted
    assert Parser(max_length=4096).parse(big).rejected == [gp.Rejected(0, len(big), UNKNOWN_APID)]


def test_misuse_raises_typeerror(Parser):
    with pytest.raises(TypeError):
        Parser().parse("not bytes")
    with pytest.raises(TypeError):
        Parser().parse(memoryview(bytearray(100))[::2])


def test_accepts_bytes_bytearray_memoryview(Parser):
    data = hk(1) + hk(2)
    for x in (data, bytearray(data), memoryview(data), memoryview(bytearray(data))):
        assert Parser().parse(x).count == 2


# -- stream mode ---------------------------------------------------------------------


def test_stream_byte_by_byte_equals_batch(Parser, StreamParser):
    rnd = random.Random(9)
    data = b"\x01\x02" + b"".join(random_packet(rnd) for _ in range(20)) + b"zz" + hk(3)
    batch = Parser().parse(data)
    sp = StreamParser()
    offsets, seqs = [], []
    for i in range(len(data)):
        r = sp.feed(data[i : i + 1])
        offsets += r.offset.tolist()
        seqs += r.seq.tolist()
    r = sp.flush()
    offsets += r.offset.tolist()
    assert offsets == batch.offset.tolist()
    assert sp.pending == 0 and sp.position == len(data)


def test_stream_waits_for_plausible_header_only(StreamParser):
    sp = StreamParser()
    p = hk(1)
    r = sp.feed(p[:40])
    assert r.count == 0 and r.rejected == [] and sp.pending == 40
    r = sp.feed(p[40:] + p[:3])
    assert r.count == 1 and r.offset.tolist() == [0] and sp.pending == 3
    # an implausible header is not waited for: resync starts at once
    sp2 = StreamParser()
    r = sp2.feed(make_packet(0x123, 0, b"\x00" * 20)[:10])
    assert r.rejected and r.rejected[0].reason == UNKNOWN_APID
    r = sp.flush()
    assert r.rejected == [gp.Rejected(56, 59, TRUNCATED)] and sp.pending == 0


def test_stream_offsets_are_stream_positions(StreamParser):
    sp = StreamParser()
    r1 = sp.feed(hk(1) + b"\xff")
    r2 = sp.feed(hk(2))
    assert r1.offset.tolist() == [0]
    assert r2.offset.tolist() == [57]
    assert r1.rejected == [gp.Rejected(56, 57, BAD_VERSION)] or r2.rejected == [gp.Rejected(56, 57, BAD_VERSION)]

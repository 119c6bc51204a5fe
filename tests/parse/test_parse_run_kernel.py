"""The run kernels (runs of packets of one APID, four at a time: AVX-512 VBMI for small
layouts, AVX2 for the others) against the pure twin: bit-identical on clean runs, on
runs broken at every position of a group of four (bad CRC, another APID, garbage, a cut
end) and on layouts at their limits (64-byte packets, 24 columns, one column, a 15-byte
packet, 25 columns, 70 bytes), in payload and stream mode.  A kernel this CPU cannot run
is skipped visibly."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parse_compare import assert_invariants, assert_same
from parse_helpers import make_packet

import ground.parse as gp
from wire import ccsds
from wire.dictionary import load, parse

_parse_c = pytest.importorskip("ground.parse._parse_c")


# 24 integer fields of every type filling a 64-byte packet exactly; 9 columns (a second
# vector with one lane); one column in a 15-byte packet; and layouts the kernel must
# leave to the scanner (f32, 25 columns, longer than 64 bytes)
_WIDE = (["u8", "i8"] * 4 + ["u16", "i16"] * 4 + ["u32", "i32"] * 3 + ["u8", "i8"])
TOML = """
[meta]
version = 1
tm_max_length = 512
tc_apid = 0x040

[[packet]]
apid = 0x020
name = "WIDE64"
fields = [
""" + "\n".join(f'  {{ name = "w{i}", type = "{t}", scale = {[1.0, 0.5, -0.25, 3.0][i % 4]}, offset = {[0, 0, 1.5, -7][i % 4]} }},'
                for i, t in enumerate(_WIDE)) + """
]

[[packet]]
apid = 0x021
name = "NINE"
fields = [
""" + "\n".join(f'  {{ name = "n{i}", type = "{t}" }},' for i, t in enumerate(["u16"] * 8 + ["i32"])) + """
]

[[packet]]
apid = 0x022
name = "TINY"
fields = [ { name = "x", type = "i8", scale = 0.1 } ]

[[packet]]
apid = 0x023
name = "FLOATY"
fields = [ { name = "f", type = "f32" }, { name = "g", type = "u16" } ]

[[packet]]
apid = 0x024
name = "TWENTYFIVE"
fields = [
""" + "\n".join(f'  {{ name = "t{i}", type = "u8" }},' for i in range(25)) + """
]

[[packet]]
apid = 0x025
name = "LONG"
fields = [
""" + "\n".join(f'  {{ name = "l{i}", type = "u32" }},' for i in range(14)) + """
]
"""

CUSTOM = parse(TOML)
SHIPPED = load()


def _length(d, apid: int) -> int:
    return d.packet(apid).length


def test_custom_layout_lengths():
    # the limits the kernel is about: a packet of exactly 64 bytes, one of 15, one of 70
    assert _length(CUSTOM, 0x020) == 64 and len(CUSTOM.packet(0x020).fields) == 24
    assert _length(CUSTOM, 0x022) == 15 and _length(CUSTOM, 0x025) == 70


# layouts each kernel takes: AVX-512 needs <= 64 bytes and <= 24 integer fields; AVX2
# needs >= 16 bytes (its 16-byte windows) and integer fields; neither takes f32 or samples
TAKES = {
    "avx512": {0x001, 0x002, 0x003, 0x004, 0x006, 0x007, 0x020, 0x021, 0x022},
    "avx2": {0x001, 0x002, 0x003, 0x004, 0x006, 0x007, 0x020, 0x021, 0x024, 0x025},
}


@pytest.fixture(autouse=True, params=["avx512", "avx2"])
def level(request):
    if request.param not in _parse_c.SIMD_LEVELS:
        pytest.skip(f"this CPU cannot run the {request.param} run kernel")
    prev = _parse_c.set_simd(request.param)
    yield request.param
    _parse_c.set_simd(prev)


def _run(d, apid: int, n: int, rnd: random.Random, seq0: int = 0) -> list[bytes]:
    size = _length(d, apid) - 14
    return [make_packet(apid, (seq0 + i) & ccsds.SEQ_MASK, rnd.randbytes(size), rnd.getrandbits(32), rnd.getrandbits(16))
            for i in range(n)]


def _check(d, data: bytes) -> gp.ParseResult:
    level = _parse_c.simd()
    ref = gp.PyParser(d).parse(data)
    got_parser = gp.CParser(d)
    got = got_parser.parse(data)
    assert_same(got, ref)
    assert_invariants(got, len(data))
    for lv in _parse_c.SIMD_LEVELS:  # every other decoder agrees too
        _parse_c.set_simd(lv)
        assert_same(gp.CParser(d).parse(data), ref)
    _parse_c.set_simd(level)
    return got


def test_clean_hk_run_goes_through_the_kernel():
    rnd = random.Random(1)
    data = b"".join(_run(SHIPPED, 0x001, 101, rnd))
    p = gp.CParser()
    res = p.parse(data)
    assert res.count == 101 and res.rejected == []
    # the first packet arms the kernel; it stops where fewer than 3 packets + 64 bytes remain
    assert p.run_packets >= 92, p.run_packets
    _check(SHIPPED, data)


def test_scalar_decoders_never_use_a_kernel():
    data = b"".join(_run(SHIPPED, 0x001, 50, random.Random(2)))
    for lv in ("ssse3", "scalar"):
        if lv in _parse_c.SIMD_LEVELS:
            _parse_c.set_simd(lv)
            p = gp.CParser()
            assert p.parse(data).count == 50 and p.run_packets == 0


@pytest.mark.parametrize("apid", [0x001, 0x002, 0x003, 0x004, 0x006, 0x007])
@pytest.mark.parametrize("where", range(9))
@pytest.mark.parametrize("fault", ["crc", "apid", "garbage", "cut"])
def test_run_broken_at_every_position(apid, where, fault):
    """A run of 17 packets broken at packet 1 + where: the kernel must hand the group
    over to the scanner at the right place, whatever the fault."""
    rnd = random.Random(apid * 100 + where)
    pk = _run(SHIPPED, apid, 17, rnd)
    i = 1 + where
    if fault == "crc":
        b = bytearray(pk[i])
        b[20] ^= 0x10
        pk[i] = bytes(b)
    elif fault == "apid":
        other = 0x002 if apid != 0x002 else 0x003
        pk[i] = _run(SHIPPED, other, 1, rnd)[0]
    elif fault == "garbage":
        pk[i] = rnd.randbytes(5) + pk[i]
    data = b"".join(pk)
    if fault == "cut":
        data = data[: sum(map(len, pk[: i + 1])) - 3]
    res = _check(SHIPPED, data)
    assert res.count == {"crc": 16, "cut": i}.get(fault, 17)


@pytest.mark.parametrize("apid", [0x020, 0x021, 0x022, 0x023, 0x024, 0x025])
def test_custom_layouts_at_the_kernel_limits(apid, level):
    rnd = random.Random(apid)
    data = b"".join(_run(CUSTOM, apid, 40, rnd))
    p = gp.CParser(CUSTOM)
    assert p.parse(data).count == 40
    # at the avx512 level, the AVX2 kernel takes what the AVX-512 one leaves
    takes = TAKES[level] | (TAKES["avx2"] if level == "avx512" else set())
    assert (p.run_packets > 0) == (apid in takes), p.run_packets
    _check(CUSTOM, data)
    # every value reaches its column: row 0 decoded by hand with the dictionary's formats
    t = gp.CParser(CUSTOM).parse(data).tables[apid]
    pkt = CUSTOM.packet(apid)
    raw = struct.unpack_from(pkt.payload_format, data, 12)
    nums = [f for f in pkt.fields if not f.type.startswith("bytes")]
    for col, (f, v) in enumerate(zip(nums, raw, strict=True)):
        assert t.values[0, col] == v * f.scale + f.add, f.name


@st.composite
def run_containers(draw, d):
    apids = [p.apid for p in d.packets]
    out = []
    seq = 0
    for _ in range(draw(st.integers(0, 6))):
        apid = draw(st.sampled_from(apids))
        n = draw(st.integers(1, 13))
        size = _length(d, apid) - 14
        for _ in range(n):
            out.append(make_packet(apid, seq & ccsds.SEQ_MASK, draw(st.binary(min_size=size, max_size=size)),
                                   draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 0xFFFF))))
            seq += 1
    data = bytearray(b"".join(out))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "truncate"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
    return bytes(data)


@given(run_containers(SHIPPED))
@settings(max_examples=250, deadline=None)
def test_runs_of_shipped_packets_identical(data):
    _check(SHIPPED, data)


@given(run_containers(CUSTOM))
@settings(max_examples=250, deadline=None)
def test_runs_of_custom_packets_identical(data):
    _check(CUSTOM, data)


@given(run_containers(SHIPPED), st.lists(st.integers(0, 10_000), max_size=6))
@settings(max_examples=150, deadline=None)
def test_runs_streamed_in_chunks_identical(data, cuts):
    cuts = sorted(c % (len(data) + 1) for c in cuts) + [len(data)]
    a, b = gp.CStreamParser(), gp.PyStreamParser()
    prev = 0
    for c in cuts:
        assert_same(a.feed(data[prev:c]), b.feed(data[prev:c]))
        prev = c
    assert_same(a.flush(), b.flush())

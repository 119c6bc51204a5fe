"""Both twins on a dictionary that exercises every field type, offset calibration, a
packet shorter than a SIMD window and one with a field gap: the layouts come from the
dictionary, not from code (so a new field is all it takes)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parse_compare import assert_invariants, assert_same
from parse_helpers import make_packet

import ground.parse as gp
from wire import ccsds
from wire.dictionary import parse

TOML = """
[meta]
version = 1
tm_max_length = 512
tc_apid = 0x040

[[packet]]
apid = 0x010
name = "ALLTYPES"
fields = [
  { name = "a", type = "u8" },
  { name = "b", type = "i8", scale = 0.5, offset = -3 },
  { name = "c", type = "u16", scale = 0.001 },
  { name = "d", type = "i16", offset = 273.15 },
  { name = "e", type = "u32", scale = 1e-6 },
  { name = "f", type = "i32", scale = 0.25, offset = 1.5 },
  { name = "g", type = "f32", scale = 2.0 },
  { name = "h", type = "i8" },
]

[[packet]]
apid = 0x011
name = "TINY"
fields = [ { name = "x", type = "i8", scale = 0.1 } ]

[[packet]]
apid = 0x012
name = "GAP"
fields = [
  { name = "p", type = "u16" },
  { name = "label", type = "bytes:30" },
  { name = "q", type = "i32", scale = -1.0 },
  { name = "r", type = "u8" },
  { name = "s", type = "i16" },
  { name = "t", type = "u32" },
  { name = "u", type = "i8" },
]
samples = { count = 5, axes = ["x", "y"], type = "i16", scale = 0.5 }

[[packet]]
apid = 0x013
name = "MANY"
fields = [
""" + "\n".join(f'  {{ name = "m{i}", type = "{t}", scale = {0.5 + i} }},'
                for i, t in enumerate(["u8", "i16", "u32", "i32", "u16", "i8"] * 5)) + """
]
"""

D = parse(TOML)
LENGTHS = {p.apid: p.length for p in D.packets}


def _decoders():
    from ground.parse import _parse_c

    return _parse_c.SIMD_LEVELS


@pytest.fixture(params=["avx512", "avx2", "ssse3", "scalar"])
def level(request):
    from ground.parse import _parse_c

    if request.param not in _parse_c.SIMD_LEVELS:
        pytest.skip(f"no {request.param} here")
    prev = _parse_c.set_simd(request.param)
    yield request.param
    _parse_c.set_simd(prev)


def test_lengths():
    assert LENGTHS[0x011] == 15  # shorter than a 16-byte SIMD window


def test_known_values(level):
    payload = struct.pack(D.packet("ALLTYPES").payload_format, 200, -7, 1234, -300, 4000000000, -123456, 1.5, -128)
    data = make_packet(0x010, 3, payload)
    for P in (gp.CParser, gp.PyParser):
        t = P(D).parse(data).tables[0x010]
        row = dict(zip(t.columns, t.values[0], strict=True))
        assert row["a"] == 200
        assert row["b"] == -7 * 0.5 - 3
        assert row["c"] == 1234 * 0.001
        assert row["d"] == -300 + 273.15
        assert row["e"] == 4000000000 * 1e-6
        assert row["f"] == -123456 * 0.25 + 1.5
        assert row["g"] == 3.0
        assert row["h"] == -128


@st.composite
def containers(draw):
    out = []
    for _ in range(draw(st.integers(0, 20))):
        apid = draw(st.sampled_from(sorted(LENGTHS)))
        payload = draw(st.binary(min_size=LENGTHS[apid] - 14, max_size=LENGTHS[apid] - 14))
        out.append(make_packet(apid, draw(st.integers(0, ccsds.SEQ_MASK)), payload))
    data = bytearray(b"".join(out))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@given(containers())
@settings(max_examples=200, deadline=None)
def test_twins_identical_on_every_decoder(data):
    from ground.parse import _parse_c

    ref = gp.PyParser(D).parse(data)
    prev = _parse_c.simd()
    try:
        for lv in _decoders():
            _parse_c.set_simd(lv)
            got = gp.CParser(D).parse(data)
            # f32 payloads may be NaN: assert_same compares bits, so NaNs must match bit for bit
            assert_same(got, ref)
            assert_invariants(got, len(data))
    finally:
        _parse_c.set_simd(prev)


def test_f32_specials(level):
    vals = [math.inf, -math.inf, -0.0, 1e-45, 3.4e38]
    data = b"".join(
        make_packet(0x010, i, struct.pack(D.packet("ALLTYPES").payload_format, 0, 0, 0, 0, 0, 0, v, 0))
        for i, v in enumerate(vals)
    )
    a, b = gp.CParser(D).parse(data), gp.PyParser(D).parse(data)
    assert_same(a, b)
    g = a.tables[0x010].column("g")
    assert g[0] == math.inf and g[1] == -math.inf and g[3] == np.float32(1e-45) * 2.0


def test_text_field_between_numerics(level):
    p = D.packet("GAP")
    payload = struct.pack(p.payload_format, 7, b"label\x00\x00", -5, 9, -2, 70000, -1) + struct.pack(">10h", *range(-5, 5))
    r = gp.CParser(D).parse(make_packet(0x012, 0, payload) * 2)
    t = r.tables[0x012]
    assert t.texts == {"label": [b"label", b"label"]}
    assert t.column("q").tolist() == [5.0, 5.0]
    assert t.column("t").tolist() == [70000.0, 70000.0]
    assert t.raw_samples[1].ravel().tolist() == list(range(-5, 5))
    assert_same(r, gp.PyParser(D).parse(make_packet(0x012, 0, payload) * 2))

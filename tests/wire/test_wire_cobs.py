"""COBS framing for serial links (wire/cobs.py)."""

from __future__ import annotations

import random

import make_vectors as mv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import cobs

# the examples from Cheshire & Baker's paper / the Wikipedia article
KNOWN = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (b"", b"\x01"),
]


@pytest.mark.parametrize("raw, enc", KNOWN)
def test_known_vectors(raw, enc):
    assert cobs.encode(raw) == enc
    assert cobs.decode(enc) == raw


@given(st.binary(max_size=1200))
@settings(max_examples=300, deadline=None)
def test_roundtrip_and_no_zero(data):
    enc = cobs.encode(data)
    assert 0 not in enc
    assert len(enc) <= cobs.max_encoded_len(len(data))
    assert cobs.decode(enc) == data


@pytest.mark.parametrize("bad", [b"\x05\x11\x22", b"\x02\x00", b"\x00", b"\x03\x11\x00\x01"])
def test_malformed_frames(bad):
    assert cobs.decode_into(bad, bytearray(16)) == -1
    with pytest.raises(ValueError):
        cobs.decode(bad)


def test_decode_into_refuses_a_small_buffer():
    enc = cobs.encode(bytes(range(1, 50)))
    assert cobs.decode_into(enc, bytearray(10)) == -1
    assert cobs.decode_into(enc, bytearray(49)) == 49


def test_deframer_resyncs_and_counts():
    packets = list(mv.vectors().values())
    got = []
    d = cobs.Deframer(1024, lambda mv_: got.append(bytes(mv_)))
    stream = bytearray(b"\x13\x37garbage-without-delimiter")  # cut mid-frame: one bad frame
    for p in packets:
        buf = bytearray(cobs.max_frame_len(len(p)))
        stream += buf[: cobs.frame_into(p, buf)]
    stream += b"\x00\x00"  # idle delimiters
    rnd = random.Random(1)
    i = 0
    while i < len(stream):
        k = rnd.randint(1, 40)
        d.feed(stream[i : i + k])
        i += k
    # the first frame absorbed the leading garbage: COBS cannot always tell (the packet
    # CRC does), but every later frame comes through intact
    assert got[-(len(packets) - 1):] == packets[1:]
    assert d.frames == len(got) and d.malformed + d.frames == len(packets)
    if d.malformed:
        assert d.dropped > 0
    else:
        from wire import ccsds

        assert not ccsds.check(got[0], 0, len(got[0]))


def test_deframer_drops_oversized_frames():
    got = []
    d = cobs.Deframer(16, lambda m: got.append(bytes(m)))
    d.feed(cobs.encode(bytes(range(1, 100))) + b"\x00" + cobs.encode(b"ok") + b"\x00")
    assert got == [b"ok"] and d.malformed == 1 and d.dropped > 0


def test_micropython_encodes_identically(run_mpy):
    packets = list(mv.vectors().values())
    src = "import binascii\nfrom wire import cobs\n"
    for p in packets + [bytes(300), bytes(range(256)) * 2]:
        src += (f"d = binascii.unhexlify({p.hex()!r})\nb = bytearray(cobs.max_frame_len(len(d)))\n"
                "n = cobs.frame_into(d, b)\nprint(binascii.hexlify(b[:n]).decode())\n"
                "o = bytearray(len(d))\nprint(cobs.decode_into(b, o, n - 1) == len(d) and o == d)\n")
    out = run_mpy(src, heapsize="100K").split()
    for k, p in enumerate(packets + [bytes(300), bytes(range(256)) * 2]):
        assert bytes.fromhex(out[2 * k]) == cobs.encode(p) + b"\x00"
        assert out[2 * k + 1] == "True"

"""Telecommands: build_tc/open_tc interoperate between CPython and the MicroPython VM;
forged MAC, replayed counter, bad CRC, truncation, another node's id and a closed
validity window give the right status."""

from __future__ import annotations

import struct

import make_vectors as mv
import pytest

from wire import ccsds
from wire.dictionary import load

D = load()
KEY = mv.TC_KEY
NODE = b"n01"
NOW = 5000  # node clock, wire-epoch s


def tc(counter=5, args=b"\x05\x00\x00\x03\xe8", opcode=2, key=KEY, seq=9, node=NODE, nb=0, na=0):
    return ccsds.build_tc(key, node, D.tc_apid, seq, opcode, counter, args, 1000, 7, 0, nb, na)


def test_ok():
    data = tc()
    st, op, ctr, a0, a1, seq = ccsds.open_tc(KEY, NODE, data, 4, NOW)
    assert (st, op, ctr, seq) == (ccsds.TC_OK, 2, 5, 9)
    assert (a0, a1) == (30, 35)  # 27 + len("n01")
    assert data[a0:a1] == b"\x05\x00\x00\x03\xe8"
    assert D.command(op).unpack_args(data[a0:a1]) == {"sensor": 5, "period_ms": 1000}
    assert len(data) == D.command("SET_RATE").length("n01") == 53


def test_exact_bytes():
    # every field at its documented offset (docs/wire-format.md)
    data = tc(counter=0x01020304, nb=0x0A0B0C0D, na=0x11121314, node=b"alpha-7", seq=3)
    assert data[12:14] == b"\x02\x00"
    assert data[14:18] == b"\x01\x02\x03\x04"
    assert data[18:22] == b"\x0a\x0b\x0c\x0d"
    assert data[22:26] == b"\x11\x12\x13\x14"
    assert data[26] == 7 and data[27:34] == b"alpha-7"
    assert data[34:39] == b"\x05\x00\x00\x03\xe8"
    assert data[39:55] == ccsds.hmac_sha256(KEY, data[:39])[:16]
    assert len(data) == 57 and ccsds.check(data, 0, len(data))
    assert struct.unpack_from(">II", data, 18) == (0x0A0B0C0D, 0x11121314)


@pytest.mark.parametrize(
    "nb, na, now, status",
    [
        (0, 0, 0, ccsds.TC_OK),
        (0, 0, 0xFFFFFFFF, ccsds.TC_OK),
        (NOW, NOW, NOW, ccsds.TC_OK),  # inclusive on both sides
        (NOW - 10, NOW + 10, NOW, ccsds.TC_OK),
        (NOW + 1, 0, NOW, ccsds.TC_NOT_YET_VALID),
        (0, NOW - 1, NOW, ccsds.TC_EXPIRED),
        (NOW - 10, NOW - 1, NOW, ccsds.TC_EXPIRED),
        (NOW + 1, NOW + 10, NOW, ccsds.TC_NOT_YET_VALID),
    ],
)
def test_window(nb, na, now, status):
    st, op, ctr, a0, a1, _ = ccsds.open_tc(KEY, NODE, tc(nb=nb, na=na), 4, now)
    assert st == status
    if st != ccsds.TC_OK:
        assert (op, ctr) == (2, 5)  # authentic: the node can consume the counter and name it


def test_window_checked_after_replay():
    # a replayed expired TC is a replay first (its counter was consumed)
    assert ccsds.open_tc(KEY, NODE, tc(na=NOW - 1), 5, NOW)[0] == ccsds.TC_REPLAY


def _refresh_crc(b: bytearray) -> bytes:
    ccsds.seal(b, 0, len(b))
    return bytes(b)


@pytest.mark.parametrize(
    "make, last, status",
    [
        (lambda: tc(key=b"wrong key"), 0, ccsds.TC_BAD_MAC),
        # a flipped argument bit with a recomputed CRC: only the MAC can tell
        (lambda: _refresh_crc(bytearray(tc()[:30]) + bytes([tc()[30] ^ 1]) + tc()[31:]), 0, ccsds.TC_BAD_MAC),
        # the window widened (not_after 0 -> far future) with a recomputed CRC
        (lambda: _refresh_crc(bytearray(tc(na=NOW - 1)[:22]) + b"\xff\xff\xff\xff" + tc(na=NOW - 1)[26:]), 0,
         ccsds.TC_BAD_MAC),
        # the node id rewritten to ours on another node's TC (same key): the MAC breaks
        (lambda: _refresh_crc(bytearray(tc(node=b"n02")[:27]) + NODE + tc(node=b"n02")[30:]), 0, ccsds.TC_BAD_MAC),
        (lambda: tc(node=b"n02"), 0, ccsds.TC_WRONG_NODE),
        (lambda: tc(node=b"n011"), 0, ccsds.TC_WRONG_NODE),
        (lambda: tc(node=b"n0"), 0, ccsds.TC_WRONG_NODE),
        # an id length running into the MAC
        (lambda: _refresh_crc(bytearray(tc()[:26]) + b"\x30" + tc()[27:]), 0, ccsds.TC_BAD_LENGTH),
        (lambda: _refresh_crc(bytearray(tc()[:26]) + b"\x00" + tc()[27:]), 0, ccsds.TC_BAD_LENGTH),
        (lambda: tc(counter=5), 5, ccsds.TC_REPLAY),
        (lambda: tc(counter=3), 5, ccsds.TC_REPLAY),
        (lambda: tc()[:-1] + bytes([tc()[-1] ^ 0x80]), 0, ccsds.TC_BAD_CRC),
        (lambda: tc()[:-3], 0, ccsds.TC_BAD_LENGTH),
        (lambda: tc()[:20], 0, ccsds.TC_BAD_LENGTH),
        (lambda: tc() + b"\x00", 0, ccsds.TC_BAD_LENGTH),
        (lambda: mv.vectors()["hk"], 0, ccsds.TC_NOT_TC),
    ],
    ids=["forged-key", "tampered-arg", "widened-window", "rewritten-node", "wrong-node", "longer-id", "shorter-id",
         "id-into-mac", "empty-id", "replay-equal", "replay-older", "bad-crc", "truncated", "short", "long", "tm-packet"],
)
def test_rejections(make, last, status):
    assert ccsds.open_tc(KEY, NODE, make(), last, NOW)[0] == status


def test_hmac_matches_the_standard_library():
    import hashlib
    import hmac

    for key in (b"", b"k", bytes(64), bytes(range(100))):
        for msg in (b"", b"abc", bytes(1000)):
            assert ccsds.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


MPY = """
import binascii
from wire import ccsds
key = %(key)r
node = b"n01"
# the node's view of a ground command
ground = binascii.unhexlify(%(ground)r)
print("open", *ccsds.open_tc(key, node, ground, 4, 5000))
print("replay", ccsds.open_tc(key, node, ground, 5, 5000)[0])
print("early", ccsds.open_tc(key, node, ground, 4, 3999)[0])
print("late", ccsds.open_tc(key, node, ground, 4, 6001)[0])
print("other", ccsds.open_tc(key, b"n02", ground, 4, 5000)[0])
forged = bytearray(ground)
forged[-4] ^= 1
ccsds.seal(forged, 0, len(forged))
print("forged", ccsds.open_tc(key, node, forged, 0, 5000)[0])
print("crc", ccsds.open_tc(key, node, ground[:-1] + b"\\x00", 0, 5000)[0] if ground[-1] else ccsds.open_tc(key, node, ground[:-1] + b"\\x01", 0, 5000)[0])
print("short", ccsds.open_tc(key, node, ground[:-2], 0, 5000)[0])
# and a command built on the VM, for the ground to check
print("built", binascii.hexlify(ccsds.build_tc(key, b"n02", %(apid)d, 77, 5, 123456, b"\\x00\\x0a", 42, 9, 0, 100, 200)).decode())
"""


def test_micropython_and_cpython_interoperate(run_mpy):
    ground = tc(counter=5, nb=4000, na=6000)
    out = run_mpy(MPY % {"key": KEY, "ground": ground.hex(), "apid": D.tc_apid}, heapsize="100K")
    res = dict(line.split(" ", 1) for line in out.strip().splitlines())
    st, op, ctr, a0, a1, seq = map(int, res["open"].split())
    assert (st, op, ctr, a0, a1, seq) == (ccsds.TC_OK, 2, 5, 30, len(ground) - 18, 9)
    assert int(res["replay"]) == ccsds.TC_REPLAY
    assert int(res["early"]) == ccsds.TC_NOT_YET_VALID
    assert int(res["late"]) == ccsds.TC_EXPIRED
    assert int(res["other"]) == ccsds.TC_WRONG_NODE
    assert int(res["forged"]) == ccsds.TC_BAD_MAC
    assert int(res["crc"]) == ccsds.TC_BAD_CRC
    assert int(res["short"]) == ccsds.TC_BAD_LENGTH
    built = bytes.fromhex(res["built"])
    assert built == ccsds.build_tc(KEY, b"n02", D.tc_apid, 77, 5, 123456, b"\x00\x0a", 42, 9, 0, 100, 200)
    st, op, ctr, a0, a1, seq = ccsds.open_tc(KEY, b"n02", built, 0, 150)
    assert (st, op, ctr, seq, built[a0:a1]) == (ccsds.TC_OK, 5, 123456, 77, b"\x00\x0a")

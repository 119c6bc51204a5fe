"""Telecommands: build_tc/open_tc interoperate between CPython and the MicroPython VM;
forged MAC, replayed counter, bad CRC and truncation give the right status."""

from __future__ import annotations

import make_vectors as mv
import pytest

from wire import ccsds
from wire.dictionary import load

D = load()
KEY = mv.TC_KEY


def tc(counter=5, args=b"\x05\x00\x00\x03\xe8", opcode=2, key=KEY, seq=9):
    return ccsds.build_tc(key, D.tc_apid, seq, opcode, counter, args, 1000, 7)


def test_ok():
    data = tc()
    st, op, ctr, a0, a1, seq = ccsds.open_tc(KEY, data, 4)
    assert (st, op, ctr, seq) == (ccsds.TC_OK, 2, 5, 9)
    assert data[a0:a1] == b"\x05\x00\x00\x03\xe8"
    assert D.command(op).unpack_args(data[a0:a1]) == {"sensor": 5, "period_ms": 1000}


def _refresh_crc(b: bytearray) -> bytes:
    ccsds.seal(b, 0, len(b))
    return bytes(b)


@pytest.mark.parametrize(
    "make, last, status",
    [
        (lambda: tc(key=b"wrong key"), 0, ccsds.TC_BAD_MAC),
        # a flipped argument bit with a recomputed CRC: only the MAC can tell
        (lambda: _refresh_crc(bytearray(tc()[:18]) + bytes([tc()[18] ^ 1]) + tc()[19:]), 0, ccsds.TC_BAD_MAC),
        (lambda: tc(counter=5), 5, ccsds.TC_REPLAY),
        (lambda: tc(counter=3), 5, ccsds.TC_REPLAY),
        (lambda: tc()[:-1] + bytes([tc()[-1] ^ 0x80]), 0, ccsds.TC_BAD_CRC),
        (lambda: tc()[:-3], 0, ccsds.TC_BAD_LENGTH),
        (lambda: tc()[:20], 0, ccsds.TC_BAD_LENGTH),
        (lambda: tc() + b"\x00", 0, ccsds.TC_BAD_LENGTH),
        (lambda: mv.vectors()["hk"], 0, ccsds.TC_NOT_TC),
    ],
    ids=["forged-key", "tampered-arg", "replay-equal", "replay-older", "bad-crc", "truncated", "short", "long", "tm-packet"],
)
def test_rejections(make, last, status):
    assert ccsds.open_tc(KEY, make(), last)[0] == status


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
# the node's view of a ground command
ground = binascii.unhexlify(%(ground)r)
print("open", *ccsds.open_tc(key, ground, 4))
print("replay", ccsds.open_tc(key, ground, 5)[0])
forged = bytearray(ground)
forged[-4] ^= 1
ccsds.seal(forged, 0, len(forged))
print("forged", ccsds.open_tc(key, forged, 0)[0])
print("crc", ccsds.open_tc(key, ground[:-1] + b"\\x00", 0)[0] if ground[-1] else ccsds.open_tc(key, ground[:-1] + b"\\x01", 0)[0])
print("short", ccsds.open_tc(key, ground[:-2], 0)[0])
# and a command built on the VM, for the ground to check
print("built", binascii.hexlify(ccsds.build_tc(key, %(apid)d, 77, 5, 123456, b"\\x00\\x0a", 42, 9)).decode())
"""


def test_micropython_and_cpython_interoperate(run_mpy):
    ground = tc(counter=5)
    out = run_mpy(MPY % {"key": KEY, "ground": ground.hex(), "apid": D.tc_apid}, heapsize="100K")
    res = dict(line.split(" ", 1) for line in out.strip().splitlines())
    st, op, ctr, a0, a1, seq = map(int, res["open"].split())
    assert (st, op, ctr, a0, a1, seq) == (ccsds.TC_OK, 2, 5, 18, len(ground) - 18, 9)
    assert int(res["replay"]) == ccsds.TC_REPLAY
    assert int(res["forged"]) == ccsds.TC_BAD_MAC
    assert int(res["crc"]) == ccsds.TC_BAD_CRC
    assert int(res["short"]) == ccsds.TC_BAD_LENGTH
    built = bytes.fromhex(res["built"])
    assert built == ccsds.build_tc(KEY, D.tc_apid, 77, 5, 123456, b"\x00\x0a", 42, 9)
    st, op, ctr, a0, a1, seq = ccsds.open_tc(KEY, built, 0)
    assert (st, op, ctr, seq, built[a0:a1]) == (ccsds.TC_OK, 5, 123456, 77, b"\x00\x0a")

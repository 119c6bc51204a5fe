"""Packet builders for the parser tests."""

from __future__ import annotations

import random

from wire import ccsds
from wire.dictionary import load


def make_packet(apid: int, seq: int, payload: bytes, coarse: int = 0, fine: int = 0, ptype: int = 0) -> bytes:
    """A packet with a right CRC around any payload (any payload is valid field data)."""
    total = ccsds.OVERHEAD + len(payload)
    b = bytearray(total)
    ccsds.pack_header(b, 0, ptype, apid, seq, total, coarse, fine)
    b[ccsds.HEADER_LEN : total - 2] = payload
    ccsds.seal(b, 0, total)
    return bytes(b)


def random_packet(rnd: random.Random, apid: int | None = None) -> bytes:
    d = load()
    p = d.packet(apid) if apid is not None else rnd.choice(d.packets)
    return make_packet(p.apid, rnd.getrandbits(14), rnd.randbytes(p.length - ccsds.OVERHEAD),
                       rnd.getrandbits(32), rnd.getrandbits(16))

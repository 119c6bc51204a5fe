"""Packet builders for tests, benches and replays (ground side; allocates freely)."""

from __future__ import annotations

import struct
import time

from ground.archive import unix_to_ticks
from wire import ccsds, defs
from wire.dictionary import Dictionary, load


def packet(apid: int, seq: int, ticks: int | None = None, dictionary: Dictionary | None = None,
           values: dict[str, float] | None = None, samples: bytes | None = None) -> bytes:
    """One valid TM packet of the dictionary's APID, raw field values by name (default 0)."""
    d = dictionary or load()
    p = d.packet(apid)
    if ticks is None:
        ticks = unix_to_ticks(time.time())
    buf = bytearray(p.length)
    ccsds.pack_header(buf, 0, ccsds.TYPE_TM, apid, seq, p.length, (ticks >> 16) & 0xFFFFFFFF, ticks & 0xFFFF)
    values = values or {}
    for f in p.fields:
        v = values.get(f.name, b"" if not f.is_numeric else 0)
        if f.is_numeric and f.type != "f32":
            v = int(v)
        struct.pack_into(">" + f.struct_code, buf, f.offset, v)
    if p.samples is not None:
        if samples is None:
            samples = bytes(p.samples.size)
        buf[p.samples.offset:p.samples.offset + p.samples.size] = samples
    ccsds.seal(buf, 0, p.length)
    return bytes(buf)


def hk(seq: int, ticks: int | None = None, **values: float) -> bytes:
    """A housekeeping packet (``defs.APID_HK``)."""
    return packet(defs.APID_HK, seq, ticks, values=values)

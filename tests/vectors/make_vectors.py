"""Golden byte vectors: one packet per telemetry APID plus one telecommand.

How they are made (and re-made, if the dictionary changes on purpose):

    .venv/bin/python tests/vectors/make_vectors.py        # rewrites tests/vectors/*.hex

Field values are a fixed function of the field's position and type (``field_values``),
packed with the dictionary's struct format at offset 12 and finished by the contract's
encoder (``wire.ccsds.PacketBuffer``: header, sequence count, CRC).  The telecommand is
``wire.ccsds.build_tc`` with ``TC_KEY``.  tests/wire/test_vectors.py checks that the
files, the CPython encoder, the MicroPython VM's encoder and both parsers agree.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from wire import ccsds  # noqa: E402
from wire.dictionary import PacketDef, load  # noqa: E402

TC_KEY = bytes(range(1, 33))  # 32-byte node key used only by the vectors
COARSE = 836_179_200  # 2026-07-01T00:00:00Z in seconds since 2000-01-01
FINE = 0x8000  # + 0.5 s
TC = dict(apid=0x040, seq=7, opcode=2, counter=1001, coarse=COARSE + 3, fine=0, sensor=5, period_ms=2)

_RANGES = {
    "u8": (0, 255),
    "i8": (-128, 127),
    "u16": (0, 65535),
    "i16": (-32768, 32767),
    "u32": (0, 4294967295),
    "i32": (-2147483648, 2147483647),
}


def field_values(p: PacketDef) -> list:
    """Deterministic raw values for every field of p (covering sign and width)."""
    out: list = []
    for i, f in enumerate(p.fields):
        if not f.is_numeric:
            out.append(("%s #%d" % (p.name.lower(), i)).encode()[: f.size])
            continue
        lo, hi = _RANGES[f.type]
        k = (i * 2654435761 + p.apid * 40503) & 0xFFFFFFFF
        v = lo + k % (hi - lo + 1)
        if i % 5 == 4:
            v = hi  # the extremes too
        elif i % 7 == 6:
            v = lo
        out.append(v)
    return out


def sample_values(p: PacketDef) -> list[int]:
    """count*axes i16 samples, a signed ramp through the whole range."""
    if p.samples is None:
        return []
    n = p.samples.count * len(p.samples.axes)
    return [((j * 1237 + 5) % 65536) - 32768 for j in range(n)]


def seq_of(p: PacketDef) -> int:
    return (p.apid * 1000 + 123) & ccsds.SEQ_MASK


def tm_packet(p: PacketDef) -> bytes:
    """The golden packet of p, built with the contract's PacketBuffer."""
    pb = ccsds.PacketBuffer(p.apid, p.length)
    pb.seq = seq_of(p)
    struct.pack_into(p.payload_format, pb.buf, ccsds.HEADER_LEN, *field_values(p))
    if p.samples is not None:
        s = sample_values(p)
        struct.pack_into(">%dh" % len(s), pb.buf, p.samples.offset, *s)
    return bytes(pb.finish(COARSE + p.apid, FINE))


def tc_packet() -> bytes:
    d = load()
    args = d.command(TC["opcode"]).pack_args(sensor=TC["sensor"], period_ms=TC["period_ms"])
    return ccsds.build_tc(TC_KEY, TC["apid"], TC["seq"], TC["opcode"], TC["counter"], args, TC["coarse"], TC["fine"])


def vectors() -> dict[str, bytes]:
    """name -> bytes: one per TM packet (lower-case name) and 'tc_set_rate'."""
    d = load()
    out = {p.name.lower(): tm_packet(p) for p in d.packets}
    out["tc_set_rate"] = tc_packet()
    return out


def main() -> int:
    for name, data in vectors().items():
        (HERE / f"{name}.hex").write_text(data.hex() + "\n")
        print(f"wrote tests/vectors/{name}.hex ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Golden vectors: the files, the CPython encoder, the MicroPython VM's encoder and both
parsers all agree byte for byte (tests/vectors/make_vectors.py says how they are made)."""

from __future__ import annotations

import struct
from pathlib import Path

import make_vectors as mv
import numpy as np
import pytest

import ground.parse as gp
from wire import ccsds
from wire.dictionary import load

VECTORS = Path(mv.__file__).parent
D = load()
NAMES = [p.name.lower() for p in D.packets] + ["tc_set_rate"]


def _file(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


def test_a_vector_for_every_apid_and_a_tc():
    files = sorted(p.stem for p in VECTORS.glob("*.hex"))
    assert files == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_cpython_encoder_reproduces_the_file(name):
    assert mv.vectors()[name] == _file(name), "regenerate with tests/vectors/make_vectors.py only on purpose"


@pytest.mark.parametrize("impl", ["cython", "python"])
@pytest.mark.parametrize("p", D.packets, ids=lambda p: p.name)
def test_parsers_decode_the_vector(impl, p):
    parser = gp.CParser() if impl == "cython" else gp.PyParser()
    data = _file(p.name.lower())
    r = parser.parse(data)
    assert r.count == 1 and r.rejected == [] and r.consumed == len(data)
    assert r.apid[0] == p.apid and r.seq[0] == mv.seq_of(p) and r.length[0] == p.length
    assert r.ticks[0] == ((mv.COARSE + p.apid) << 16) | mv.FINE
    t = r.tables[p.apid]
    raw = mv.field_values(p)
    for f, v in zip(p.fields, raw, strict=True):
        if f.is_numeric:
            assert t.column(f.name)[0] == v * f.scale + f.add, f.name
        else:
            assert t.texts[f.name] == [v.rstrip(b"\0")]
    if p.samples is not None:
        s = np.array(mv.sample_values(p), dtype=np.int16).reshape(p.samples.count, len(p.samples.axes))
        assert np.array_equal(t.raw_samples[0], s)


def test_all_vectors_in_one_container_and_in_a_stream():
    data = b"".join(_file(p.name.lower()) for p in D.packets) + _file("tc_set_rate")
    for P, S in ((gp.CParser, gp.CStreamParser), (gp.PyParser, gp.PyStreamParser)):
        r = P().parse(data)
        assert r.count == len(D.packets)
        # the TC (APID 0x040, no TM layout) is CRC-proven: skipped whole
        assert [(x.reason, x.end - x.start) for x in r.rejected] == [("unknown_apid", len(_file("tc_set_rate")))]
        sp = S()
        n = sum(sp.feed(data[i : i + 7]).count for i in range(0, len(data), 7))
        assert n == len(D.packets)


def _mpy_encoder_script() -> str:
    lines = [
        "import struct, binascii",
        "from wire import ccsds, defs",
        "def emit(name, apid, length, fmt, vals, seq, coarse, fine, soff=0, samples=None):",
        "    pb = ccsds.PacketBuffer(apid, length)",
        "    pb.seq = seq",
        "    struct.pack_into(fmt, pb.buf, ccsds.PacketBuffer.PAYLOAD, *vals)",
        "    if samples:",
        "        struct.pack_into('>%dh' % len(samples), pb.buf, soff, *samples)",
        "    print(name, binascii.hexlify(pb.finish(coarse, fine)).decode())",
    ]
    for p in D.packets:
        n = p.name.upper()
        vals = mv.field_values(p)
        args = f"'{p.name.lower()}', defs.APID_{n}, defs.{n}_LEN, defs.{n}_FMT, {tuple(vals)!r}, {mv.seq_of(p)}, {mv.COARSE + p.apid}, {mv.FINE}"
        if p.samples is not None:
            args += f", defs.{n}_SAMPLES_OFF, {mv.sample_values(p)!r}"
        lines.append(f"emit({args})")
    tc = mv.TC
    lines += [
        f"args = struct.pack(defs.ARGS_SET_RATE, {tc['sensor']}, {tc['period_ms']})",
        f"tc = ccsds.build_tc({mv.TC_KEY!r}, {tc['node']!r}, {tc['apid']}, {tc['seq']}, defs.OP_SET_RATE, {tc['counter']}, args, "
        f"{tc['coarse']}, {tc['fine']}, 0, {tc['not_before']}, {tc['not_after']})",
        "print('tc_set_rate', binascii.hexlify(tc).decode())",
    ]
    return "\n".join(lines) + "\n"


def test_micropython_encoder_produces_identical_bytes(run_mpy):
    out = run_mpy(_mpy_encoder_script(), heapsize="256K")
    got = dict(line.split() for line in out.splitlines() if line.strip())
    assert sorted(got) == sorted(NAMES)
    for name in NAMES:
        assert bytes.fromhex(got[name]) == _file(name), name


def test_ccsds_helpers_roundtrip_the_vectors():
    for p in D.packets:
        data = _file(p.name.lower())
        assert ccsds.check(data, 0, len(data))
        ptype, apid, seq, total, coarse, fine = ccsds.peek(data)
        assert (ptype, apid, seq, total, coarse, fine) == (0, p.apid, mv.seq_of(p), p.length, mv.COARSE + p.apid, mv.FINE)
        # CRC over the whole packet, trailer included, is the zero residue
        assert ccsds.crc16(data) == 0
        from ground.parse import _parse_c

        assert _parse_c.crc16(data[:-2]) == struct.unpack(">H", data[-2:])[0]

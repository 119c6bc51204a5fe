"""An independent CCSDS decoder (spacepackets) reads our primary headers correctly."""

from __future__ import annotations

from pathlib import Path

import make_vectors as mv
import pytest
from spacepackets.ccsds.spacepacket import (
    PacketId,
    PacketType,
    SequenceFlags,
    SpacePacketHeader,
    parse_space_packets,
)

from wire.dictionary import load

D = load()
VECTORS = Path(mv.__file__).parent


def _file(name):
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


@pytest.mark.parametrize("p", D.packets, ids=lambda p: p.name)
def test_tm_headers(p):
    data = _file(p.name.lower())
    h = SpacePacketHeader.unpack(data)
    assert h.ccsds_version == 0
    assert h.packet_type == PacketType.TM
    assert h.apid == p.apid
    assert h.seq_count == mv.seq_of(p)
    assert h.sec_header_flag is True
    assert h.seq_flags == SequenceFlags.UNSEGMENTED
    assert h.data_len == len(data) - 7
    assert h.packet_len == len(data) == p.length


def test_tc_header():
    data = _file("tc_set_rate")
    h = SpacePacketHeader.unpack(data)
    assert h.packet_type == PacketType.TC
    assert h.apid == D.tc_apid == mv.TC["apid"]
    assert h.seq_count == mv.TC["seq"]
    assert h.sec_header_flag is True
    assert h.packet_len == len(data) == D.command("SET_RATE").length(mv.TC["node"].decode())


def test_spacepackets_splits_a_container():
    data = b"".join(_file(p.name.lower()) for p in D.packets)
    packet_ids = tuple(PacketId(PacketType.TM, True, p.apid) for p in D.packets)
    res = parse_space_packets(bytearray(data), packet_ids)
    assert [bytes(x) for x in res.tm_list] == [_file(p.name.lower()) for p in D.packets]


def test_crc16_c_and_table_paths_agree(run_mpy) -> None:
    """CPython computes crc16 with binascii.crc_hqx; MicroPython runs the table loop: same CRC.

    The same cases on both, the table loop on the real VM (no patching of the module)."""
    import random

    from wire import ccsds as c

    assert c._crc_hqx is not None  # CPython
    rnd = random.Random(7)
    cases = []
    for _ in range(120):
        b = rnd.randbytes(rnd.randint(0, 700))
        s = rnd.randint(0, len(b))
        cases.append((b, s, rnd.randint(s, len(b)), rnd.randint(0, 0xFFFF)))
    fast = [(c.crc16(b, s, e, init), c.crc16(bytearray(b), s, -1, init)) for b, s, e, init in cases]
    script = "import binascii\nfrom wire import ccsds\nprint(ccsds.crc16(b'123456789'))\n" + "".join(
        f"b = binascii.unhexlify({b.hex()!r})\nprint(ccsds.crc16(b, {s}, {e}, {init}), "
        f"ccsds.crc16(bytearray(b), {s}, -1, {init}))\n" for b, s, e, init in cases)
    out = run_mpy(script).split("\n")
    assert int(out[0]) == c.crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value
    assert [tuple(int(x) for x in line.split()) for line in out[1:1 + len(cases)]] == fast

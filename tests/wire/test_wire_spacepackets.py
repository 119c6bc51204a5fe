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

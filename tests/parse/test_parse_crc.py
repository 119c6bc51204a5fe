"""The extension's slicing-by-8 CRC equals the contract's byte-wise CRC-16/CCITT-FALSE."""

from __future__ import annotations

import binascii

from hypothesis import given
from hypothesis import strategies as st

from ground.parse import _bench_c, _parse_c
from wire import ccsds


def test_tables_come_from_the_contract():
    assert _parse_c.CRC_POLY == 0x1021
    assert _parse_c.crc16(b"123456789") == ccsds.crc16(b"123456789") == 0x29B1  # the catalogue check value


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_slicing_by_8_equals_bytewise(data, init):
    assert _parse_c.crc16(data, init) == ccsds.crc16(data, 0, -1, init) == binascii.crc_hqx(data, init)


def test_crc_scan_counts_good_and_bad():
    from lunabase.bench.parse import make_container

    data = bytearray(make_container("HK", 10))
    assert _bench_c.crc_scan(data) == (10, 0, len(data))
    data[70] ^= 4  # payload of packet 1
    assert _bench_c.crc_scan(data) == (9, 1, len(data))
    assert _bench_c.crc_scan(bytes(data[:-5])) == (8, 1, 9 * 56)

"""Custody acknowledgements, ground side: build and read the message (docs/custody.md).

The message is a TC-format packet (``wire.ccsds.build_tc``: HMAC with the node's key, the
node's id inside the MAC, a strictly increasing counter) with APID ``CUSTODY_APID`` and
opcode 0; its arguments say, per APID 0..7, the sequence count through which the ground
has committed every packet to the archive.  The node checks it with ``open_tc`` against a
counter of its own (not the telecommand counter) and answers nothing: no ACK packet, so a
custody acknowledgement never creates telemetry that needs another one.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from wire import ccsds

NAPID = 8  # APIDs 0..7 (the dictionary uses 1..7)
ARGS_LEN = 2 * NAPID
ARGS_FMT = f">{NAPID}H"


def encode_args(through: Mapping[int, int]) -> bytes:
    """The arguments for {apid: last committed sequence count}; APIDs >= 8 are not stated."""
    vals = [0] * NAPID
    for apid, seq in through.items():
        if 0 <= apid < NAPID:
            vals[apid] = ccsds.CUSTODY_VALID | (seq & ccsds.SEQ_MASK)
    return struct.pack(ARGS_FMT, *vals)


def decode_args(args: bytes) -> dict[int, int]:
    """{apid: sequence count} stated by custody arguments."""
    vals = struct.unpack(ARGS_FMT, args)
    return {a: v & ccsds.SEQ_MASK for a, v in enumerate(vals) if v & ccsds.CUSTODY_VALID}


def build(key: bytes, node: bytes, counter: int, through: Mapping[int, int]) -> bytes:
    """A signed custody acknowledgement for ``node`` (bytes id)."""
    return ccsds.build_tc(key, node, ccsds.CUSTODY_APID, counter & ccsds.SEQ_MASK, 0, counter,
                          encode_args(through))

"""The reference parser in pure Python: clear rather than fast.

The Cython twin (``_parse_c.pyx``) must give identical results for every input; the
differential tests in tests/parse/test_parse_differential.py hold them to it.
"""

from __future__ import annotations

import struct

import numpy as np

from ground.parse._common import (
    BAD_CRC,
    BAD_LENGTH,
    BAD_TYPE,
    BAD_VERSION,
    MIN_PACKET,
    TRUNCATED,
    UNKNOWN_APID,
    ApidLayout,
    ParseResult,
    Rejected,
    Table,
    compile_layout,
)
from wire import ccsds
from wire.dictionary import Dictionary

_HDR = struct.Struct(">HHHIH")


def _crc_ok(data: memoryview, off: int, total: int) -> bool:
    return ccsds.check(data, off, total)


class Parser:
    """Parses containers (one MQTT payload = packets back to back) against a dictionary.

    ``parse(data)`` never raises on bad bytes: it skips, resynchronises and reports
    every skipped range in ``ParseResult.rejected``.
    """

    implementation = "python"

    def __init__(self, dictionary: Dictionary | None = None, max_length: int | None = None) -> None:
        self.layouts: dict[int, ApidLayout] = compile_layout(dictionary)
        from wire.dictionary import load

        self.max_length = max_length or (dictionary or load()).max_length

    def parse(self, data: bytes | bytearray | memoryview) -> ParseResult:
        """Parse one complete container; a packet cut off at the end is ``truncated``."""
        return self._scan(memoryview(data).cast("B"), final=True)

    # -- the scanner shared with StreamParser ------------------------------------------

    def _scan(self, mv: memoryview, final: bool) -> ParseResult:
        n = len(mv)
        layouts = self.layouts
        maxlen = self.max_length
        accepted: list[tuple[int, int, int, int, int]] = []  # offset, apid, seq, ticks, total
        rejected: list[Rejected] = []
        bad_start = -1
        bad_reason = ""
        p = 0
        while p < n:
            reason = None
            whole = 0  # >0: skip a CRC-proven packet of this many bytes
            if n - p < ccsds.PRIMARY_LEN:
                if not final:
                    break  # wait for the rest of the header
                reason = TRUNCATED
            else:
                w0 = (mv[p] << 8) | mv[p + 1]
                total = ((mv[p + 4] << 8) | mv[p + 5]) + 7
                if w0 >> 13 != ccsds.VERSION:
                    reason = BAD_VERSION
                elif total < MIN_PACKET or total > maxlen:
                    reason = BAD_LENGTH
                else:
                    apid = w0 & ccsds.APID_MASK
                    lay = layouts.get(apid)
                    if lay is None:
                        reason = UNKNOWN_APID
                    elif (w0 >> 11) & 3 != 1:  # type TM with a secondary header
                        reason = BAD_TYPE
                    elif total != lay.length:
                        reason = BAD_LENGTH
                    if total > n - p:
                        # only a header that fully matches its dictionary entry is worth
                        # waiting for; anything else is garbage to resync over
                        if reason is None:
                            if not final:
                                break
                            reason = TRUNCATED
                    elif not _crc_ok(mv, p, total):
                        reason = BAD_CRC
                    elif reason is not None:
                        whole = total  # the CRC proves the boundary: skip the packet whole
                    else:
                        if bad_start >= 0:
                            rejected.append(Rejected(bad_start, p, bad_reason))
                            bad_start = -1
                        _, w1, _, coarse, fine = _HDR.unpack_from(mv, p)
                        accepted.append((p, apid, w1 & ccsds.SEQ_MASK, (coarse << 16) | fine, total))
                        p += total
                        continue
            if whole:
                if bad_start >= 0:
                    rejected.append(Rejected(bad_start, p, bad_reason))
                    bad_start = -1
                rejected.append(Rejected(p, p + whole, reason))
                p += whole
                continue
            if bad_start < 0:
                bad_start, bad_reason = p, reason
            p += 1
        consumed = p
        if bad_start >= 0:
            if final:
                rejected.append(Rejected(bad_start, n, bad_reason))
                consumed = n
            else:
                # bytes already judged bad are consumed; the tail may still start a packet
                rejected.append(Rejected(bad_start, p, bad_reason))
        return self._decode(mv, accepted, rejected, consumed)

    def _decode(self, mv: memoryview, accepted: list, rejected: list[Rejected], consumed: int) -> ParseResult:
        count = len(accepted)
        apid = np.fromiter((a[1] for a in accepted), dtype=np.uint16, count=count)
        seq = np.fromiter((a[2] for a in accepted), dtype=np.uint16, count=count)
        ticks = np.fromiter((a[3] for a in accepted), dtype=np.int64, count=count)
        offset = np.fromiter((a[0] for a in accepted), dtype=np.int64, count=count)
        length = np.fromiter((a[4] for a in accepted), dtype=np.int32, count=count)
        tables: dict[int, Table] = {}
        by_apid: dict[int, list[int]] = {}
        for i, a in enumerate(accepted):
            by_apid.setdefault(a[1], []).append(i)
        for ap, rows in by_apid.items():
            lay = self.layouts[ap]
            values = np.empty((len(rows), len(lay.numeric)), dtype=np.float64)
            texts: dict[str, list[bytes]] = {name: [] for (name, _o, _z) in lay.texts}
            raw = None
            s_off = s_count = s_axes = 0
            if lay.samples is not None:
                s_off, s_count, s_axes, _ = lay.samples
                raw = np.empty((len(rows), s_count, s_axes), dtype=np.int16)
            for k, i in enumerate(rows):
                off = accepted[i][0]
                for j, (_name, f_off, typ, scale, add) in enumerate(lay.numeric):
                    v = struct.unpack_from(">" + _CODES[typ], mv, off + f_off)[0]
                    values[k, j] = v * scale + add
                for name, t_off, size in lay.texts:
                    texts[name].append(bytes(mv[off + t_off : off + t_off + size]).rstrip(b"\x00"))
                if raw is not None:
                    flat = struct.unpack_from(f">{s_count * s_axes}h", mv, off + s_off)
                    raw[k] = np.array(flat, dtype=np.int16).reshape(s_count, s_axes)
            tables[ap] = Table(
                apid=ap,
                name=lay.name,
                columns=tuple(f[0] for f in lay.numeric),
                rows=np.array(rows, dtype=np.intp),
                values=values,
                raw_samples=raw,
                sample_scale=lay.samples[3] if lay.samples else 1.0,
                texts=texts,
            )
        return ParseResult(count, apid, seq, ticks, offset, length, tables, rejected, consumed)


class StreamParser:
    """Parses a byte stream (e.g. a serial link without COBS) chunk by chunk.

    ``feed`` returns what the new bytes completed; offsets are positions in the whole
    stream.  An incomplete packet at the end is kept (at most one max-length packet)
    until more bytes arrive or ``flush`` declares it truncated.
    """

    def __init__(self, dictionary: Dictionary | None = None, parser: Parser | None = None) -> None:
        self.parser = parser or Parser(dictionary)
        self._buf = bytearray()
        self.position = 0  # stream offset of self._buf[0]

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> ParseResult:
        self._buf += data
        return self._take(final=False)

    def flush(self) -> ParseResult:
        """Declare the stream ended: whatever is held back is rejected as truncated."""
        return self._take(final=True)

    def _take(self, final: bool) -> ParseResult:
        res = self.parser._scan(memoryview(self._buf), final)
        base = self.position
        if base:
            res.offset += base
            res.rejected = [Rejected(r.start + base, r.end + base, r.reason) for r in res.rejected]
        # decoded values were copied out of the buffer, so it can be trimmed now
        del self._buf[: res.consumed]
        self.position += res.consumed
        return res


_CODES = {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f"}

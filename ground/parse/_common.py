"""Types shared by both parser twins (pure Python and Cython): results, reasons, layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from wire import ccsds
from wire.dictionary import Dictionary, PacketDef, load

# Why bytes were rejected.  Ranges that could not be trusted as a packet boundary
# (bad version/length/CRC, truncation) are resynchronised one byte at a time and
# reported as one range with the reason of its first failure; packets whose CRC
# proved their boundary (unknown APID, wrong length for the APID, wrong type) are
# skipped whole.
BAD_VERSION = "bad_version"
BAD_LENGTH = "bad_length"
TRUNCATED = "truncated"
BAD_CRC = "bad_crc"
UNKNOWN_APID = "unknown_apid"
BAD_TYPE = "bad_type"
REASONS = (BAD_VERSION, BAD_LENGTH, TRUNCATED, BAD_CRC, UNKNOWN_APID, BAD_TYPE)

# struct type -> numpy dtype used to decode the fixed fields (big-endian)


class Rejected(NamedTuple):
    """A byte range [start, end) that was skipped, and why."""

    start: int
    end: int
    reason: str


@dataclass
class Table:
    """The accepted packets of one APID in one parse call, decoded column-wise.

    ``values[i, j]`` is the engineering value of ``columns[j]`` in the i-th packet of
    this APID; ``rows[i]`` is that packet's index in the ParseResult arrays.
    """

    apid: int
    name: str
    columns: tuple[str, ...]
    rows: np.ndarray  # intp
    values: np.ndarray  # float64 (n, len(columns))
    raw_samples: np.ndarray | None = None  # int16 (n, count, axes) for sample packets
    sample_scale: float = 1.0
    texts: dict[str, list[bytes]] = field(default_factory=dict)  # bytes fields, NULs stripped

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.columns.index(name)]

    @property
    def samples(self) -> np.ndarray | None:
        """Sample blocks in engineering units (float64), or None."""
        if self.raw_samples is None:
            return None
        return self.raw_samples.astype(np.float64) * self.sample_scale


@dataclass
class ParseResult:
    """What one parse call found.

    Per accepted packet, in input order: ``apid``, ``seq``, ``ticks`` (time tag in
    2^-16 s since the epoch: coarse << 16 | fine), ``offset`` (of its first byte) and
    ``length``.  ``tables`` holds the decoded values by APID; ``rejected`` every
    skipped range; ``reasons`` / ``rejected_bytes`` count ranges and bytes per reason.
    ``consumed`` is how many input bytes were used up (a stream parser keeps the rest).
    """

    count: int
    apid: np.ndarray
    seq: np.ndarray
    ticks: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    tables: dict[int, Table]
    rejected: list[Rejected]
    consumed: int

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r.reason] = out.get(r.reason, 0) + 1
        return out

    @property
    def rejected_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r.reason] = out.get(r.reason, 0) + r.end - r.start
        return out


class ApidLayout(NamedTuple):
    """A packet type compiled for the decoders."""

    apid: int
    name: str
    length: int
    numeric: tuple[tuple[str, int, str, float, float], ...]  # (name, offset, type, scale, add)
    texts: tuple[tuple[str, int, int], ...]  # (name, offset, size)
    samples: tuple[int, int, int, float] | None  # (offset, count, axes, scale), int16 samples


def compile_layout(d: Dictionary | None = None) -> dict[int, ApidLayout]:
    """The dictionary's TM packets as ApidLayouts, keyed by APID."""
    d = d or load()
    out = {}
    for p in d.packets:
        out[p.apid] = _compile(p)
    return out


def _compile(p: PacketDef) -> ApidLayout:
    numeric = tuple((f.name, f.offset, f.type, f.scale, f.add) for f in p.fields if f.is_numeric)
    texts = tuple((f.name, f.offset, f.size) for f in p.fields if not f.is_numeric)
    samples = None
    if p.samples is not None:
        if p.samples.type != "i16":
            raise ValueError(f"{p.name}: only i16 sample blocks are supported, got {p.samples.type}")
        samples = (p.samples.offset, p.samples.count, len(p.samples.axes), p.samples.scale)
    return ApidLayout(p.apid, p.name, p.length, numeric, texts, samples)


MIN_PACKET = ccsds.OVERHEAD

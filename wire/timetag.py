"""Time tags <-> Unix time, the CPython side of the wire contract (docs/wire-format.md).

A time tag is node time: u32 seconds since 2000-01-01T00:00:00Z (``ccsds.EPOCH_UNIX``)
and u16 fractions of 2^-16 s.  Ground code carries it as one integer, *ticks* =
``coarse << 16 | fine`` (2^-16 s since the epoch).

    >>> ticks_to_unix(unix_to_ticks(1700000000.5))
    1700000000.5
    >>> split(1.75)                 # node seconds -> (coarse, fine)
    (1, 49152)
"""

from __future__ import annotations

from typing import Any

from wire.ccsds import EPOCH_UNIX, FINE_PER_S

TICKS_PER_S = float(FINE_PER_S)

__all__ = ["EPOCH_UNIX", "TICKS_PER_S", "node_to_unix", "split", "ticks_to_unix", "unix_to_node", "unix_to_ticks"]


def unix_to_ticks(t: float) -> int:
    """Unix time -> ticks (2^-16 s since 2000), rounded to the nearest tick."""
    return int(round((t - EPOCH_UNIX) * TICKS_PER_S))


def ticks_to_unix(ticks: Any) -> Any:
    """Ticks -> Unix time (s): a float, or a float64 array for a numpy array of ticks."""
    return ticks / TICKS_PER_S + EPOCH_UNIX


def node_to_unix(node_s: float) -> float:
    """Node time (s since 2000) -> Unix time (s)."""
    return node_s + EPOCH_UNIX


def unix_to_node(t: float) -> float:
    """Unix time -> node time (s since 2000)."""
    return t - EPOCH_UNIX


def split(node_s: float) -> tuple[int, int]:
    """Node time (s since 2000) -> the packet's (coarse, fine) fields, truncated as the node does."""
    return int(node_s), int((node_s % 1.0) * FINE_PER_S) & 0xFFFF

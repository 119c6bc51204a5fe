"""Vectorised limit checking: a Table's columns against the dictionary's yellow/red ranges.

``PacketLimits.levels(values)`` gives, per sample and limited field, 0 (inside yellow),
1 (outside yellow, inside red) or 2 (outside red).  ``condition`` turns a level sequence
into the *alarm condition* after persistence (N consecutive violating samples), carrying
run lengths across batches, with numpy only: no Python loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wire.dictionary import Dictionary, Field, PacketDef

OK, YELLOW, RED = 0, 1, 2
LEVEL_NAMES = ("ok", "yellow", "red")
PENDING = -1  # violating, but not yet for `persistence` samples: no change of condition


@dataclass
class PacketLimits:
    """The limited fields of one packet type, as arrays aligned with its Table columns."""

    packet: PacketDef
    fields: tuple[Field, ...]
    cols: np.ndarray  # column index in Table.values for each limited field
    ylo: np.ndarray
    yhi: np.ndarray
    rlo: np.ndarray
    rhi: np.ndarray
    persistence: np.ndarray

    @classmethod
    def build(cls, p: PacketDef) -> PacketLimits:
        numeric = [f.name for f in p.numeric_fields]
        fs = tuple(f for f in p.numeric_fields if f.yellow or f.red)
        inf = float("inf")

        def rng(f: Field, which: str) -> tuple[float, float]:
            r = getattr(f, which) or (f.red if which == "yellow" else f.yellow) or (-inf, inf)
            return r

        return cls(
            packet=p,
            fields=fs,
            cols=np.array([numeric.index(f.name) for f in fs], dtype=np.intp),
            ylo=np.array([rng(f, "yellow")[0] for f in fs]),
            yhi=np.array([rng(f, "yellow")[1] for f in fs]),
            rlo=np.array([f.red[0] if f.red else -inf for f in fs]),
            rhi=np.array([f.red[1] if f.red else inf for f in fs]),
            persistence=np.array([max(1, f.persistence) for f in fs], dtype=np.int64),
        )

    def levels(self, values: np.ndarray) -> np.ndarray:
        """int8 (n, len(fields)): 0 ok, 1 yellow, 2 red, for a Table's ``values`` (n, columns)."""
        v = values[:, self.cols]
        out = ((v < self.ylo) | (v > self.yhi)).astype(np.int8)
        out[(v < self.rlo) | (v > self.rhi)] = RED
        return out


def limits_for(d: Dictionary) -> dict[int, PacketLimits]:
    """PacketLimits for every packet type with at least one limited field, by APID."""
    out = {}
    for p in d.packets:
        pl = PacketLimits.build(p)
        if pl.fields:
            out[p.apid] = pl
    return out


def run_lengths(mask: np.ndarray, carry: int) -> np.ndarray:
    """Consecutive True count ending at each index (0 where False); ``carry`` = run before."""
    n = len(mask)
    idx = np.arange(n)
    last_false = np.maximum.accumulate(np.where(mask, -1, idx)) if n else idx
    run = idx - last_false
    return np.where(last_false < 0, run + carry, run) * mask


def condition(level: np.ndarray, persistence: int, viol_carry: int, red_carry: int) -> tuple[np.ndarray, int, int]:
    """Alarm condition per sample (OK/YELLOW/RED, or PENDING) and the run lengths to carry.

    The condition is RED after ``persistence`` consecutive red samples, YELLOW after that
    many violating (yellow or red) samples, OK on any sample inside the yellow range.
    """
    viol = run_lengths(level > 0, viol_carry)
    red = run_lengths(level == RED, red_carry)
    cond = np.where(red >= persistence, RED, np.where(viol >= persistence, YELLOW, np.where(level == 0, OK, PENDING)))
    if len(level):
        return cond, int(viol[-1]), int(red[-1])
    return cond, viol_carry, red_carry

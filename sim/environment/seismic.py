"""Moonquakes, after the Apollo Passive Seismic Experiment (1969–1977).

- Deep moonquakes (700–1,200 km deep, tidally triggered): frequent and small — about
  7,000 catalogued over the ~8 years of the network (Nakamura, JGR 110, 2005), i.e.
  ≈ 2.4 per day, body-wave magnitudes below ≈ 3.  Modelled: Poisson, 2.4/day,
  Gutenberg–Richter (b = 1) magnitudes in [0.5, 3.0], 0.5–2 Hz, decay τ 5–10 min.
- Shallow moonquakes (< 200 km): rare — 28 in 1972–1977 (Nakamura et al., 1979), ≈ 5.6
  per year — and large, up to ≈ M5.  Modelled: Poisson, 5.6/year, magnitudes in
  [2.0, 5.0] (b = 1), 2–8 Hz, τ 10–20 min.
- Lunar seismograms reverberate for tens of minutes to hours (strong scattering in a
  dry regolith/megaregolith: Latham et al., Science 1970; Dainty et al., 1974); with the
  protocol's instant-onset envelope ``A·e^{−t/τ}`` a τ of 5–20 min gives 25–100 min of
  visible signal.
- Amplitude at the node (µm/s²): ``A = 300 · 10^(M−5)``: an M5 shallow quake nearly
  fills the SEISMIC channel's i16 range (±327 µm/s² at 0.01 µm/s²/LSB); a typical deep
  quake is far below 1 µm/s², near the 0.05 µm/s² noise floor.  This is a model choice
  (no source-distance term), not an Apollo figure.

Quakes happen on the accelerated simulated timeline; their waveforms play out in the
node's real time (a 100 Hz seismometer samples real seconds), so a τ of 10 min lasts 10
real minutes whatever the acceleration.  Deterministic from the seed: each 1-day bucket
of simulated time draws its own events from ``Random(f"{seed}:quake:{bucket}")``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

DAY_S = 86400.0
DEEP_PER_DAY = 2.4
SHALLOW_PER_YEAR = 5.6
NOISE_UM_S2 = 0.05


def amplitude(magnitude: float) -> float:
    """Peak acceleration at the node (µm/s²) of a quake of ``magnitude``."""
    return 300.0 * 10 ** (magnitude - 5.0)


@dataclass(frozen=True)
class Quake:
    t: float  # sim time of the onset, s since the 2000 epoch
    magnitude: float
    kind: str = "shallow"  # deep | shallow
    freq_hz: float = 4.0
    decay_s: float = 900.0

    @property
    def amplitude(self) -> float:
        return amplitude(self.magnitude)


def _gr_magnitude(rng: random.Random, lo: float, hi: float, b: float = 1.0) -> float:
    """A magnitude in [lo, hi] from a truncated Gutenberg–Richter law."""
    u = rng.random()
    span = 1.0 - 10 ** (-b * (hi - lo))
    return lo - math.log10(1.0 - u * span) / b


class QuakeCatalogue:
    """All quakes of a run: scheduled ones plus seeded random deep and shallow ones."""

    def __init__(
        self,
        seed: int = 0,
        scheduled: list[Quake] | None = None,
        deep_per_day: float = DEEP_PER_DAY,
        shallow_per_year: float = SHALLOW_PER_YEAR,
    ):
        self.seed = seed
        self.scheduled = sorted(scheduled or [], key=lambda q: q.t)
        self.deep_per_day = deep_per_day
        self.shallow_per_year = shallow_per_year
        self._buckets: dict[int, list[Quake]] = {}

    def _bucket(self, b: int) -> list[Quake]:
        if b not in self._buckets:
            rng = random.Random(f"{self.seed}:quake:{b}")
            out: list[Quake] = []
            for kind, rate_per_s in (("deep", self.deep_per_day / DAY_S), ("shallow", self.shallow_per_year / (365.25 * DAY_S))):
                if rate_per_s <= 0:
                    continue
                t = b * DAY_S
                while True:
                    t += rng.expovariate(rate_per_s)
                    if t >= (b + 1) * DAY_S:
                        break
                    if kind == "deep":
                        q = Quake(t, _gr_magnitude(rng, 0.5, 3.0), "deep", rng.uniform(0.5, 2.0), rng.uniform(300, 600))
                    else:
                        q = Quake(t, _gr_magnitude(rng, 2.0, 5.0), "shallow", rng.uniform(2.0, 8.0), rng.uniform(600, 1200))
                    out.append(q)
            self._buckets[b] = out
        return self._buckets[b]

    def between(self, t0: float, t1: float) -> list[Quake]:
        """Quakes with onset in (t0, t1], in time order."""
        if t1 <= t0:
            return []
        found = [q for q in self.scheduled if t0 < q.t <= t1]
        for b in range(int(t0 // DAY_S), int(t1 // DAY_S) + 1):
            found += [q for q in self._bucket(b) if t0 < q.t <= t1]
        return sorted(found, key=lambda q: q.t)

"""Absorbed dose rate in silicon at the surface, with solar particle events.

- Background (galactic cosmic rays): 1,369 per day ≈ 57.0 per hour, the figure of the
  Lunar Lander Neutrons and Dosimetry experiment (LND) on Chang'e-4 (Zhang et al.,
  Science Advances 6, eaaz1334, 2020).  Note: the paper gives 1,369 µSv/day (57.1 µSv/h)
  as the *dose equivalent*; the absorbed dose rate in silicon it reports is 13.2 ± 1
  µGy/h.  lunabase's dictionary and brief name the channel ``dose_rate`` in µGy/h with
  the 57 µGy/h background, and the model follows that convention (see docs/sim.md).  A ±3 % slow modulation and ±2 % sample noise
  stand in for GCR variability.
- Solar particle events (SPE): the dose rate rises by orders of magnitude for hours to
  days (e.g. the October 1989 and the 2024-05 events; Schwadron et al., Space Weather
  2018 for lunar-surface SPE doses).  Each event: start, peak factor over background,
  rise time, e-folding decay; profile ``(t/rise)²`` up to the peak, then ``exp``.
  Random events arrive as a Poisson process (``spe_per_year``, default 4: a few
  significant events a year near solar maximum), deterministic from the seed.
- Counts: the silicon detector counts ≈ 0.0544 pulses/s per µGy/h (3.1 counts/s at
  background, the figure used in docs/sim-protocol.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

DOSE_PER_DAY_UGY = 1369.0
BACKGROUND_UGY_H = DOSE_PER_DAY_UGY / 24.0
COUNTS_PER_UGY_H = 3.1 / 57.0
YEAR_S = 365.25 * 86400.0
_BUCKET_S = 30 * 86400.0


@dataclass(frozen=True)
class SolarParticleEvent:
    start: float  # sim time, s since the 2000 epoch
    peak_factor: float = 1000.0  # peak dose rate / background
    rise_h: float = 2.0
    decay_h: float = 12.0

    def factor(self, t: float) -> float:
        """Extra dose rate at ``t`` in units of the background."""
        dt = (t - self.start) / 3600.0
        if dt <= 0:
            return 0.0
        if dt < self.rise_h:
            return self.peak_factor * (dt / self.rise_h) ** 2
        return self.peak_factor * math.exp(-(dt - self.rise_h) / self.decay_h)


class RadiationModel:
    """Dose rate (µGy/h) and detector count rate at sim time ``t``."""

    def __init__(self, seed: int = 0, events: list[SolarParticleEvent] | None = None, spe_per_year: float = 4.0):
        self.seed = seed
        self.events = list(events or [])
        self.spe_per_year = spe_per_year
        self._buckets: dict[int, list[SolarParticleEvent]] = {}

    def _random_events(self, bucket: int) -> list[SolarParticleEvent]:
        if bucket not in self._buckets:
            rng = random.Random(f"{self.seed}:spe:{bucket}")
            out = []
            lam = self.spe_per_year * _BUCKET_S / YEAR_S
            t = bucket * _BUCKET_S
            while self.spe_per_year > 0:
                t += rng.expovariate(lam / _BUCKET_S)
                if t >= (bucket + 1) * _BUCKET_S:
                    break
                out.append(
                    SolarParticleEvent(
                        t, peak_factor=10 ** rng.uniform(1.0, 3.5), rise_h=rng.uniform(1, 6), decay_h=rng.uniform(6, 48)
                    )
                )
            self._buckets[bucket] = out
        return self._buckets[bucket]

    def active_events(self, t: float) -> list[SolarParticleEvent]:
        b = int(t // _BUCKET_S)
        rand = [e for k in range(b - 1, b + 1) for e in self._random_events(k)]
        return [e for e in self.events + rand if e.start <= t]

    def spe_factor(self, t: float) -> float:
        return sum(e.factor(t) for e in self.active_events(t))

    def background(self, t: float) -> float:
        return BACKGROUND_UGY_H * (1.0 + 0.03 * math.sin(2 * math.pi * t / (27.0 * 86400.0)))

    def dose_rate(self, t: float, noise: random.Random | None = None) -> float:
        """µGy/h in silicon at ``t``; with ``noise``, a ±2 % sample jitter."""
        r = self.background(t) * (1.0 + self.spe_factor(t))
        if noise is not None:
            r *= 1.0 + noise.gauss(0.0, 0.02)
        return max(0.0, r)

    @staticmethod
    def count_rate(dose_rate: float) -> float:
        return dose_rate * COUNTS_PER_UGY_H

"""Sun geometry over the lunar synodic day.

- Synodic month (sunrise to sunrise at a fixed site): 29.530589 days (mean; e.g. the
  Astronomical Almanac / NASA lunar fact sheet), so about 14.77 days of light and 14.77
  of night at the equator.
- Lunar spin axis: 1.54° from the ecliptic pole (Cassini state; NASA fact sheet), so the
  sub-solar latitude swings ±1.54° over an eclipse ("draconic") year of 346.62 days.

The model is analytical: local solar time advances 24 lunar "hours" per synodic day and
the elevation is the usual ``sin el = sin φ sin δ + cos φ cos δ cos H``.  Simulated time
``t`` is seconds since the 2000 epoch; a :class:`SunModel` fixes which local time the
site has at a reference instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.environment.site import Site

DAY_S = 86400.0
SYNODIC_DAY_S = 29.530589 * DAY_S  # mean synodic month
DRACONIC_YEAR_S = 346.62 * DAY_S  # period of the sub-solar latitude swing
OBLIQUITY_DEG = 1.54  # lunar equator to ecliptic
SOLAR_CONSTANT = 1361.0  # W/m² at 1 AU (Kopp & Lean 2011, TSI)
SUN_RADIUS_DEG = 0.267  # apparent angular radius of the solar disc


@dataclass(frozen=True)
class SunState:
    """Where the sun is for a site at one instant."""

    elevation_deg: float  # above the geometric horizon
    local_time_h: float  # lunar local solar time, 0..24 (12 = noon)
    visible: float  # fraction of the solar disc above the local horizon, 0..1
    hours_since_sunset: float  # Earth hours since the sun last set (0 while lit)

    @property
    def lit(self) -> bool:
        return self.visible > 0.0


class SunModel:
    """Sun elevation for ``site``; local time ``local_time_h`` at sim time ``t_ref``."""

    def __init__(self, site: Site, t_ref: float = 0.0, local_time_h: float = 6.0, declination_phase: float = 0.0):
        self.site = site
        self.t_ref = t_ref
        self.lt_ref = local_time_h
        self.dec_phase = declination_phase

    def local_time(self, t: float) -> float:
        return (self.lt_ref + 24.0 * (t - self.t_ref) / SYNODIC_DAY_S) % 24.0

    def declination_deg(self, t: float) -> float:
        return OBLIQUITY_DEG * math.sin(2 * math.pi * (t - self.t_ref) / DRACONIC_YEAR_S + self.dec_phase)

    def elevation_deg(self, t: float) -> float:
        lat = math.radians(self.site.lat_deg)
        dec = math.radians(self.declination_deg(t))
        h = math.radians((self.local_time(t) - 12.0) * 15.0)
        s = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(h)
        return math.degrees(math.asin(max(-1.0, min(1.0, s))))

    def visible_fraction(self, elevation_deg: float) -> float:
        """Fraction of the solar disc above the local horizon (linear across the disc)."""
        above = elevation_deg - self.site.horizon_deg
        return max(0.0, min(1.0, (above + SUN_RADIUS_DEG) / (2 * SUN_RADIUS_DEG)))

    def hours_since_sunset(self, t: float) -> float:
        """Earth hours since the disc last fully set (0 while any of it is up).

        Searched backwards in 1/2000-synodic-day steps, then bisected: the elevation is
        smooth, and a site where the sun never rose in the last synodic day reports a
        full synodic day.
        """
        if self.visible_fraction(self.elevation_deg(t)) > 0:
            return 0.0
        step = SYNODIC_DAY_S / 2000
        lo = t
        for _ in range(2000):
            hi = lo
            lo = hi - step
            if self.visible_fraction(self.elevation_deg(lo)) > 0:
                for _ in range(30):
                    mid = 0.5 * (lo + hi)
                    if self.visible_fraction(self.elevation_deg(mid)) > 0:
                        lo = mid
                    else:
                        hi = mid
                return (t - hi) / 3600.0
        return SYNODIC_DAY_S / 3600.0

    def state(self, t: float) -> SunState:
        el = self.elevation_deg(t)
        vis = self.visible_fraction(el)
        return SunState(el, self.local_time(t), vis, 0.0 if vis > 0 else self.hours_since_sunset(t))

    def irradiance(self, t: float, tilt_deg: float) -> float:
        """W/m² on a panel tilted ``tilt_deg`` from horizontal, turned toward the sun in azimuth."""
        el = self.elevation_deg(t)
        vis = self.visible_fraction(el)
        if vis <= 0:
            return 0.0
        cos_inc = math.sin(math.radians(max(el, 0.0) + tilt_deg)) if tilt_deg < 90 else math.cos(math.radians(el))
        return SOLAR_CONSTANT * vis * max(0.0, cos_inc)

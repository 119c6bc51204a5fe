"""Regolith surface temperature and a node's enclosure/electronics temperatures.

Surface (analytical, per site):

- Day: radiative equilibrium of the regolith, ``T = ((1−A)·S·v·sin(el+slope) / (εσ))^¼``
  with Bond albedo A = 0.08 and emissivity ε = 0.95, which gives ≈ 390 K (+117 °C) at the
  equatorial sub-solar point — Diviner's equatorial noon is ≈ 390–400 K (Williams et al.,
  Icarus 283, 2017; Vasavada et al., JGR 117, 2012).  In the afternoon the regolith does
  not drop below its dusk temperature (thermal inertia): ``max(T_eq, T_dusk)``.
- Night: after sunset the surface cools fast, then slowly toward the site's floor,
  ``T = T_floor + (T_dusk − T_floor)/√(1 + h/τ)`` (h hours after sunset, τ = 2 h,
  T_dusk = 150 K, equatorial floor 92 K): ≈ 97 K at midnight and ≈ 96 K (−177 °C)
  before dawn, inside Diviner's −170…−180 °C pre-dawn range.  In the morning the surface
  warms from that pre-dawn value.

Node (stateful, one first-order node per station): an insulated enclosure with heat
capacity ``C`` exchanges heat with a radiative sink (``T_sink = 0.77·T_surface``: half
the sky is the regolith, half is 3 K space) through a conductance that louvres reduce
when cold, and is heated by its own load, its electric heater and a radioisotope heater
unit (RHU, as on Chang'e-3/4 and the Apollo ALSEP).  Each step relaxes exponentially
toward the equilibrium temperature of the current inputs (stable for any step size).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from sim.environment.site import Site
from sim.environment.sun import SOLAR_CONSTANT, SunState

K0 = 273.15
SIGMA = 5.670374e-8
ALBEDO = 0.08
EMISSIVITY = 0.95
T_DUSK_K = 150.0
NIGHT_TAU_H = 2.0
NIGHT_LENGTH_H = 29.530589 * 24 / 2
SINK_FACTOR = 0.5**0.25 * 0.92  # ≈ 0.77


def equilibrium_k(site: Site, sun: SunState) -> float:
    """Radiative-equilibrium regolith temperature (K) under the sun, 0 in the dark."""
    if sun.visible <= 0:
        return 0.0
    inc = math.sin(math.radians(max(0.0, sun.elevation_deg) + site.slope_deg))
    flux = (1 - ALBEDO) * SOLAR_CONSTANT * sun.visible * max(0.0, inc)
    return (flux / (EMISSIVITY * SIGMA)) ** 0.25


def night_k(site: Site, hours_since_sunset: float) -> float:
    """Regolith temperature (K) ``hours_since_sunset`` hours into the night."""
    floor = site.night_floor_k
    return floor + (T_DUSK_K - floor) / math.sqrt(1.0 + hours_since_sunset / NIGHT_TAU_H)


def surface_temp_c(site: Site, sun: SunState) -> float:
    """Regolith surface temperature in °C at the site for this sun state."""
    if sun.visible > 0:
        t_eq = equilibrium_k(site, sun)
        if sun.local_time_h >= 12.0 and not site.polar:
            return max(t_eq, T_DUSK_K) - K0
        return max(t_eq, night_k(site, NIGHT_LENGTH_H)) - K0
    return night_k(site, sun.hours_since_sunset) - K0


@functools.lru_cache(maxsize=4096)
def _equilibrium_c(g_open: float, g_closed: float, closed_c: float, open_c: float, sink_c: float,
                   power_w: float) -> float:
    # 50 bisection steps per node per environment step; nodes of one model at one site
    # ask the same question every step, so the answer is cached (the same float either way)
    def conductance(temp_c: float) -> float:
        x = max(0.0, min(1.0, (temp_c - closed_c) / (open_c - closed_c)))
        return g_closed + x * (g_open - g_closed)

    lo, hi = sink_c, sink_c + power_w / g_closed + 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if conductance(mid) * (mid - sink_c) < power_w:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass
class NodeThermal:
    """A node's enclosure: lumped heat capacity, louvred conductance to the sink.

    The louvres open linearly between ``louvre_closed_c`` (conductance ``g_closed_w_k``)
    and ``louvre_open_c`` (``g_open_w_k``), like the thermostatic louvres on many
    spacecraft radiators.
    """

    capacity_j_k: float = 3000.0
    g_open_w_k: float = 0.06
    g_closed_w_k: float = 0.0015
    louvre_closed_c: float = 0.0
    louvre_open_c: float = 25.0
    electronics_c: float = 20.0

    def conductance(self, temp_c: float) -> float:
        x = (temp_c - self.louvre_closed_c) / (self.louvre_open_c - self.louvre_closed_c)
        x = max(0.0, min(1.0, x))
        return self.g_closed_w_k + x * (self.g_open_w_k - self.g_closed_w_k)

    def equilibrium_c(self, sink_c: float, power_w: float) -> float:
        """The temperature at which the louvred conductance carries ``power_w`` to the sink."""
        return _equilibrium_c(self.g_open_w_k, self.g_closed_w_k, self.louvre_closed_c, self.louvre_open_c, sink_c,
                              power_w)

    def step(self, dt: float, surface_c: float, power_w: float) -> None:
        """Advance ``dt`` seconds with ``power_w`` dissipated inside (load + heater + RHU)."""
        sink = SINK_FACTOR * (surface_c + K0) - K0
        target = self.equilibrium_c(sink, power_w)
        g = self.conductance(target)
        self.electronics_c = target + (self.electronics_c - target) * math.exp(-g * dt / self.capacity_j_k)

    def readings(self, surface_c: float, load_w: float) -> dict[str, float]:
        """Temperatures (°C) of the parts the THERMAL/POWER/HK packets report."""
        sink = SINK_FACTOR * (surface_c + K0) - K0
        te = self.electronics_c
        return {
            "surface_temp": surface_c,
            "electronics_temp": te,
            "radiator_temp": sink + 0.3 * (te - sink),
            "sensor_head_temp": sink + 0.15 * (te - sink),
            "enclosure_temp": sink + 0.8 * (te - sink),
            "battery_temp": te - 2.0,
            "cpu_temp": te + 6.0 + 10.0 * load_w,
        }

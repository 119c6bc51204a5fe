"""Solar array and battery.

- Array: ``P = irradiance · area · efficiency`` with the irradiance of
  :meth:`sim.environment.sun.SunModel.irradiance` (1361 W/m² solar constant, Kopp &
  Lean 2011) on a panel tilted ``tilt_deg`` (sun-tracking in azimuth).  Default 0.05 m²
  at 28 % (triple-junction GaAs cells, e.g. Azur Space 3G30: 29.5 % BOL AM0) ≈ 19 W at
  normal incidence.  Voltage ≈ 5.0–5.6 V when lit (a 2-cell string into the charger),
  0 V in the dark.
- Battery: one Li-ion cell, energy capacity ``capacity_wh``, open-circuit voltage from
  the state of charge (a typical NMC curve: 3.0 V empty, 3.7 V at 40 %, 4.2 V full),
  95 % charge efficiency.  At 0 % the node browns out (the simulator kills its VM) and
  stays dark until the array lifts the charge back to ``restart_soc`` — that is how a
  node fails the 14.8-day night when its battery is too small for its load.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

_OCV = ((0.0, 3.0), (5.0, 3.3), (10.0, 3.45), (20.0, 3.6), (40.0, 3.72), (60.0, 3.85), (80.0, 4.0), (100.0, 4.2))


def ocv(soc: float) -> float:
    """Open-circuit voltage (V) of the cell at ``soc`` percent."""
    soc = max(0.0, min(100.0, soc))
    for (s0, v0), (s1, v1) in itertools.pairwise(_OCV):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return _OCV[-1][1]


@dataclass
class SolarArray:
    area_m2: float = 0.05
    efficiency: float = 0.28
    tilt_deg: float = 0.0

    def power_w(self, irradiance: float) -> float:
        return max(0.0, irradiance) * self.area_m2 * self.efficiency

    def voltage(self, power_w: float) -> float:
        if power_w <= 1e-6:
            return 0.0
        peak = 1361.0 * self.area_m2 * self.efficiency
        return 5.0 + 0.6 * min(1.0, power_w / peak)


@dataclass
class Battery:
    capacity_wh: float = 40.0
    soc: float = 80.0
    charge_efficiency: float = 0.95
    restart_soc: float = 5.0
    browned_out: bool = False
    last_power_w: float = 0.0  # net into the battery, + charging

    def step(self, dt: float, solar_w: float, load_w: float) -> None:
        """Advance ``dt`` seconds; sets ``browned_out`` at 0 % and clears it at ``restart_soc``."""
        if self.browned_out:
            load_w = 0.0
        net = solar_w - load_w
        if net > 0:
            if self.soc >= 100.0:
                net = 0.0  # the charger curtails the array
            else:
                net *= self.charge_efficiency
        self.last_power_w = net
        self.soc = max(0.0, min(100.0, self.soc + 100.0 * net * dt / 3600.0 / self.capacity_wh))
        if self.soc <= 0.0:
            self.browned_out = True
        elif self.browned_out and self.soc >= self.restart_soc:
            self.browned_out = False

    @property
    def voltage(self) -> float:
        return ocv(self.soc)

    @property
    def current(self) -> float:
        return self.last_power_w / self.voltage

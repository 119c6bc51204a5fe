"""The environment of one site over simulated time, and the stations (nodes) in it.

:class:`Environment` owns simulated time: :meth:`Environment.advance` moves it forward
in sub-steps of at most ``MAX_SUBSTEP_S`` and returns the conditions of each sub-step
(sun, surface temperature, dose rate) plus the moonquakes that began.  Every
:class:`Station` integrates its battery and enclosure temperature over those sub-steps,
so the cost of the sun/thermal model does not grow with the number of nodes and the
result does not depend on how often the runner steps.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from sim.environment.power import Battery, SolarArray
from sim.environment.radiation import RadiationModel, SolarParticleEvent
from sim.environment.seismic import Quake, QuakeCatalogue
from sim.environment.site import Site
from sim.environment.sun import SunModel, SunState
from sim.environment.thermal import NodeThermal, surface_temp_c

MAX_SUBSTEP_S = 900.0
#: 2026-02-22T00:00:00Z as seconds since 2000-01-01 (the MicroPython epoch): default start
DEFAULT_START = 825_000_000.0
MODES = ("DAY", "NIGHT", "EMERGENCY", "SAFE")


@dataclass(frozen=True)
class Conditions:
    """The site at one instant of simulated time."""

    t: float
    sun: SunState
    irradiance_flat: float  # W/m² on a horizontal panel
    surface_c: float
    dose_rate: float  # µGy/h, without sample noise


class Environment:
    """Sun, surface temperature, radiation and quakes of one site, from a seed."""

    def __init__(
        self,
        site: Site,
        seed: int = 0,
        start: float = DEFAULT_START,
        local_time_h: float = 6.0,
        spe: list[SolarParticleEvent] | None = None,
        quakes: list[Quake] | None = None,
        spe_per_year: float = 4.0,
        deep_per_day: float = 2.4,
        shallow_per_year: float = 5.6,
    ) -> None:
        self.site = site
        self.seed = seed
        self.sun = SunModel(site, start, local_time_h)
        self.radiation = RadiationModel(seed, spe, spe_per_year)
        self.quakes = QuakeCatalogue(seed, quakes, deep_per_day, shallow_per_year)
        self.t = start
        self.start = start
        self._sunset: float | None = None
        self._lit = True
        self.now = self.conditions(start)

    def conditions(self, t: float) -> Conditions:
        """Stateless conditions at ``t`` (searches back for the last sunset)."""
        sun = self.sun.state(t)
        return self._make(t, sun)

    def _make(self, t: float, sun: SunState) -> Conditions:
        return Conditions(
            t, sun, self.sun.irradiance(t, 0.0), surface_temp_c(self.site, sun), self.radiation.dose_rate(t)
        )

    def _tracked(self, t_prev: float, t: float) -> Conditions:
        el = self.sun.elevation_deg(t)
        vis = self.sun.visible_fraction(el)
        if vis > 0:
            self._lit = True
            since = 0.0
        else:
            if self._lit or self._sunset is None:
                self._sunset = 0.5 * (t_prev + t)  # set within this sub-step
                self._lit = False
            since = (t - self._sunset) / 3600.0
        return self._make(t, SunState(el, self.sun.local_time(t), vis, since))

    def advance(self, t_new: float) -> tuple[list[tuple[float, Conditions]], list[Quake]]:
        """Move to ``t_new``: ``([(dt, conditions at the end of each sub-step)], new quakes)``."""
        if self._sunset is None:
            h = self.sun.hours_since_sunset(self.t)
            self._lit = h == 0.0
            self._sunset = self.t - h * 3600.0 if h else None
        steps: list[tuple[float, Conditions]] = []
        t0 = self.t
        t = t0
        while t < t_new:
            dt = min(MAX_SUBSTEP_S, t_new - t)
            steps.append((dt, self._tracked(t, t + dt)))
            t += dt
        quakes = self.quakes.between(t0, t_new) if t_new > t0 else []
        self.t = max(self.t, t_new)
        if steps:
            self.now = steps[-1][1]
        return steps, quakes


@dataclass
class StationConfig:
    """A node's hardware in the model: array, battery, loads, heaters, enclosure."""

    battery_wh: float = 40.0
    soc: float = 80.0
    panel_area_m2: float = 0.05
    panel_efficiency: float = 0.28
    panel_tilt_deg: float | None = None  # None: the site's default
    #: load per mode (W); a mode missing here uses the load the node reports
    loads: dict[str, float] = field(default_factory=dict)
    default_load_w: float = 0.5
    heater_w: float = 0.5
    rhu_w: float = 0.3  # radioisotope heater unit: constant heat, no electricity
    heater_on_c: float = -30.0  # sim thermostat, used while the node does not report its heater
    heater_off_c: float = -20.0
    thermal: NodeThermal = field(default_factory=NodeThermal)


class Station:
    """The model state of one node: battery, enclosure temperature, mode, load, heater."""

    def __init__(self, env: Environment, cfg: StationConfig, name: str = "node") -> None:
        self.env = env
        self.cfg = cfg
        self.name = name
        tilt = cfg.panel_tilt_deg if cfg.panel_tilt_deg is not None else env.site.panel_tilt_deg
        self.array = SolarArray(cfg.panel_area_m2, cfg.panel_efficiency, tilt)
        self.battery = Battery(cfg.battery_wh, cfg.soc)
        self.thermal = dataclasses.replace(cfg.thermal)
        self.mode = "DAY"
        self.reported_load_w: float | None = None
        self.node_heater: int | None = None  # None: the node has not said; the sim thermostat decides
        self.sim_heater = False
        self.solar_w = 0.0
        self.rng = random.Random(f"{env.seed}:station:{name}")
        self.energy_used_wh = 0.0

    @property
    def heater_on(self) -> bool:
        return bool(self.node_heater) if self.node_heater is not None else self.sim_heater

    @property
    def load_w(self) -> float:
        """Electrical load of the node (without the heater); 0 while browned out."""
        if self.battery.browned_out:
            return 0.0
        if self.mode in self.cfg.loads:
            return self.cfg.loads[self.mode]
        if self.reported_load_w is not None:
            return self.reported_load_w
        return self.cfg.default_load_w

    def report(self, mode: str | None = None, load_w: float | None = None, heater: int | None = None) -> None:
        """What the node said over the sensor bus."""
        if mode in MODES:
            self.mode = mode  # type: ignore[assignment]
        if load_w is not None:
            self.reported_load_w = float(load_w)
        if heater is not None:
            self.node_heater = int(heater)

    def step(self, substeps: list[tuple[float, Conditions]]) -> None:
        """Integrate battery and enclosure over the environment's sub-steps."""
        for dt, c in substeps:
            irr = self.env.sun.irradiance(c.t, self.array.tilt_deg) if c.sun.visible > 0 else 0.0
            self.solar_w = self.array.power_w(irr)
            if self.node_heater is None:
                te = self.thermal.electronics_c
                if te < self.cfg.heater_on_c:
                    self.sim_heater = True
                elif te > self.cfg.heater_off_c:
                    self.sim_heater = False
            heater = self.cfg.heater_w if self.heater_on and not self.battery.browned_out else 0.0
            load = self.load_w + heater
            self.battery.step(dt, self.solar_w, load)
            if not self.battery.browned_out:
                self.energy_used_wh += load * dt / 3600.0
            else:
                heater = load = 0.0
            self.thermal.step(dt, c.surface_c, load + self.cfg.rhu_w)

    def sensors(self, noise: bool = True) -> dict[str, float]:
        """Engineering values for the protocol's ``sensors`` object."""
        c = self.env.now
        g = self.rng.gauss if noise else (lambda mu, s: 0.0)
        sv = self.array.voltage(self.solar_w)
        out = self.thermal.readings(c.surface_c, self.load_w)
        out = {k: v + g(0.0, 0.05) for k, v in out.items()}
        dose = self.env.radiation.dose_rate(c.t, self.rng if noise else None)
        heater = self.cfg.heater_w if self.heater_on else 0.0
        out.update(
            solar_voltage=sv,
            solar_current=self.solar_w / sv if sv else 0.0,
            battery_voltage=self.battery.voltage,
            battery_current=self.battery.current,
            battery_soc=self.battery.soc,
            dose_rate=dose,
            count_rate=RadiationModel.count_rate(dose),
            load_power=self.load_w,
            heater_power=heater,
        )
        return {k: round(v, 4) for k, v in out.items()}

"""The lunar environment model: site, sun, thermal, power, radiation, moonquakes.

Every figure and its source is in the docstring of the module that uses it and in
docs/sim.md.  Deterministic from a seed.
"""

from sim.environment.model import DEFAULT_START, Conditions, Environment, Station, StationConfig
from sim.environment.power import Battery, SolarArray, ocv
from sim.environment.radiation import BACKGROUND_UGY_H, DOSE_PER_DAY_UGY, RadiationModel, SolarParticleEvent
from sim.environment.seismic import Quake, QuakeCatalogue
from sim.environment.site import EQUATOR, SHACKLETON, SITES, Site, site_from
from sim.environment.sun import SYNODIC_DAY_S, SunModel, SunState
from sim.environment.thermal import NodeThermal, surface_temp_c

__all__ = [
    "BACKGROUND_UGY_H",
    "DEFAULT_START",
    "DOSE_PER_DAY_UGY",
    "EQUATOR",
    "SHACKLETON",
    "SITES",
    "SYNODIC_DAY_S",
    "Battery",
    "Conditions",
    "Environment",
    "NodeThermal",
    "Quake",
    "QuakeCatalogue",
    "RadiationModel",
    "Site",
    "SolarArray",
    "SolarParticleEvent",
    "Station",
    "StationConfig",
    "SunModel",
    "SunState",
    "ocv",
    "site_from",
    "surface_temp_c",
]

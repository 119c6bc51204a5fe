"""Where a station stands: latitude/longitude, local horizon, terrain slope, night floor.

Two presets cover the two kinds of site the brief asks for:

- ``equator``: a mare site on the equator, flat horizon.  Surface temperatures follow
  LRO Diviner's equatorial figures (≈ +120 °C at noon, ≈ −170…−180 °C before dawn;
  Williams et al., Icarus 283, 2017, "The global surface temperatures of the Moon as
  measured by the Diviner Lunar Radiometer Experiment").
- ``shackleton``: a point on the rim of Shackleton crater (≈ 89.7° S).  The sun stays
  within about ±1.5° of the horizon (lunar obliquity 1.54°); an elevated rim sees it
  below the geometric horizon (``horizon_deg`` negative), which is why such ridges are
  lit most of the time (Bussey et al., Icarus 208, 2010: 80–90 % illumination).
  Regolith there stays far colder than at the equator (Diviner polar summer maxima
  ≈ 200–250 K on sunlit slopes; Paige et al., Science 330, 2010).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Site:
    """A surface site.

    ``horizon_deg``: elevation of the local horizon (negative on a raised rim);
    ``slope_deg``: how much the terrain under the node tilts toward the sun, which adds
    to the incidence angle on the regolith; ``night_floor_k``: the temperature the
    regolith tends to at the end of a long night; ``panel_tilt_deg``: default tilt of
    solar panels from horizontal (0 = flat, 90 = vertical sun-tracking in azimuth).
    """

    name: str
    lat_deg: float
    lon_deg: float
    horizon_deg: float = 0.0
    slope_deg: float = 0.0
    night_floor_k: float = 92.0
    panel_tilt_deg: float = 0.0

    @property
    def polar(self) -> bool:
        return abs(self.lat_deg) > 80.0


EQUATOR = Site("equator", 0.0, 0.0)
SHACKLETON = Site(
    "shackleton", -89.7, 129.8, horizon_deg=-1.5, slope_deg=5.0, night_floor_k=60.0, panel_tilt_deg=90.0
)
CHANGE4 = Site("von-karman", -45.4446, 177.5991)  # Chang'e-4 landing site (far side)

SITES: dict[str, Site] = {s.name: s for s in (EQUATOR, SHACKLETON, CHANGE4)}


def site_from(spec: str | dict[str, Any]) -> Site:
    """A preset by name, or a ``Site`` from a TOML table (``preset`` fields overridden)."""
    if isinstance(spec, str):
        try:
            return SITES[spec]
        except KeyError:
            raise ValueError(f"unknown site {spec!r}: presets are {', '.join(SITES)}") from None
    spec = dict(spec)
    base = SITES.get(spec.pop("preset", ""), None)
    fields = dict(base.__dict__) if base else {}
    fields.update(spec)
    if "lat_deg" not in fields:
        raise ValueError("site: give a preset or lat_deg/lon_deg")
    fields.setdefault("name", "custom")
    fields.setdefault("lon_deg", 0.0)
    return Site(**fields)

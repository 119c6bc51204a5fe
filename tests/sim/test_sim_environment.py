"""The environment model against the figures it cites (docs/sim.md)."""

from __future__ import annotations

import math

import pytest

from sim.environment import (
    DEFAULT_START,
    EQUATOR,
    SHACKLETON,
    SYNODIC_DAY_S,
    Environment,
    Quake,
    RadiationModel,
    SolarParticleEvent,
    Station,
    StationConfig,
)
from sim.environment.seismic import QuakeCatalogue

DAY = 86400.0


def at_local_time(h: float) -> float:
    """Sim time at which an environment started at 06:00 local has local time h (same lunation)."""
    return DEFAULT_START + (h - 6.0) / 24.0 * SYNODIC_DAY_S


def test_equator_noon_is_about_plus_120c() -> None:
    c = Environment(EQUATOR).conditions(at_local_time(12.0))
    assert c.sun.elevation_deg > 88
    assert 110.0 <= c.surface_c <= 125.0, c.surface_c  # Diviner: ≈ 390-400 K


def test_equator_predawn_is_minus_170_to_180c() -> None:
    c = Environment(EQUATOR).conditions(at_local_time(29.9))  # 05:54 next lunar morning
    assert not c.sun.lit
    assert c.sun.hours_since_sunset > 300
    assert -180.0 <= c.surface_c <= -170.0, c.surface_c


def test_day_length_is_the_synodic_month() -> None:
    env = Environment(EQUATOR, local_time_h=6.0)
    # sample the elevation every 10 minutes over two lunations: find sunrises
    step = 600.0
    rises = []
    prev = env.sun.elevation_deg(DEFAULT_START - step)
    t = DEFAULT_START
    while t < DEFAULT_START + 2.1 * SYNODIC_DAY_S:
        el = env.sun.elevation_deg(t)
        if prev <= 0 < el:
            rises.append(t)
        prev = el
        t += step
    assert len(rises) >= 2
    assert abs((rises[1] - rises[0]) / DAY - 29.53) < 0.02
    lit = sum(env.sun.elevation_deg(DEFAULT_START + k * 3600.0) > 0 for k in range(int(SYNODIC_DAY_S // 3600)))
    assert 14.5 <= lit / 24 <= 15.1  # ≈ 14.8 days of light


def test_polar_site_grazing_and_colder() -> None:
    polar, eq = Environment(SHACKLETON), Environment(EQUATOR)
    els = [polar.sun.elevation_deg(DEFAULT_START + k * DAY) for k in range(60)]
    assert max(abs(e) for e in els) < 2.0  # low grazing angles
    hottest_polar = max(polar.conditions(DEFAULT_START + k * DAY).surface_c for k in range(30))
    hottest_eq = max(eq.conditions(DEFAULT_START + k * DAY).surface_c for k in range(30))
    assert hottest_polar < hottest_eq - 100
    lit = sum(polar.conditions(DEFAULT_START + k * DAY).sun.lit for k in range(30))
    assert lit >= 20  # an elevated rim is lit most of the time


def test_background_dose_per_day() -> None:
    rad = RadiationModel(seed=1, spe_per_year=0)
    step = 60.0
    total = sum(rad.dose_rate(DEFAULT_START + k * step) * step / 3600 for k in range(int(DAY / step)))
    assert abs(total - 1369.0) / 1369.0 < 0.04, total  # Chang'e-4 LND
    assert 54 < rad.dose_rate(DEFAULT_START) < 60


def test_solar_particle_event_raises_dose_by_orders_of_magnitude() -> None:
    spe = SolarParticleEvent(DEFAULT_START + 3600, peak_factor=1000, rise_h=2, decay_h=12)
    rad = RadiationModel(seed=1, events=[spe], spe_per_year=0)
    peak = rad.dose_rate(DEFAULT_START + 3 * 3600)
    assert peak > 100 * rad.dose_rate(DEFAULT_START)
    assert rad.dose_rate(DEFAULT_START + 3 * 3600 + 5 * DAY) < 2 * rad.dose_rate(DEFAULT_START)


def test_quake_rates_and_determinism() -> None:
    a = QuakeCatalogue(seed=7).between(DEFAULT_START, DEFAULT_START + 400 * DAY)
    b = QuakeCatalogue(seed=7).between(DEFAULT_START, DEFAULT_START + 400 * DAY)
    assert a == b
    deep = [q for q in a if q.kind == "deep"]
    shallow = [q for q in a if q.kind == "shallow"]
    assert 2.0 < len(deep) / 400 < 2.8  # ≈ 2.4/day (Apollo, Nakamura 2005)
    assert 1 <= len(shallow) <= 15  # ≈ 5.6/year
    assert max(q.magnitude for q in deep) <= 3.0
    assert max(q.magnitude for q in shallow) <= 5.0
    assert all(300 <= q.decay_s <= 1200 for q in a)  # reverberation: tens of minutes
    # split queries give the same events
    mid = DEFAULT_START + 123.4 * DAY
    c = QuakeCatalogue(seed=7)
    assert c.between(DEFAULT_START, mid) + c.between(mid, DEFAULT_START + 400 * DAY) == a


def _night(battery_wh: float) -> tuple[float, bool, list[str]]:
    """Run a station from noon through the night to the next noon with a reference controller."""
    env = Environment(EQUATOR, seed=3, local_time_h=12.0, spe_per_year=0)
    st = Station(env, StationConfig(battery_wh=battery_wh, soc=100.0, loads={"DAY": 0.5, "NIGHT": 0.08, "EMERGENCY": 0.03}))
    modes = []
    failed = False
    t = env.t
    while t < env.start + SYNODIC_DAY_S:
        t += 3600.0
        steps, _ = env.advance(t)
        st.step(steps)
        s = st.sensors(noise=False)
        mode = "DAY" if s["solar_voltage"] > 1 else ("EMERGENCY" if s["battery_soc"] < 10 else "NIGHT")
        st.report(mode)
        if not modes or modes[-1] != mode:
            modes.append(mode)
        failed |= st.battery.browned_out
    return st.battery.soc, failed, modes


@pytest.mark.parametrize("battery_wh, survives", [(60.0, True), (40.0, True), (15.0, False), (8.0, False)])
def test_night_survival_depends_on_battery_size(battery_wh: float, survives: bool) -> None:
    soc, failed, modes = _night(battery_wh)
    assert failed is not survives, (battery_wh, soc, modes)
    assert "NIGHT" in modes
    if not survives:
        assert modes.index("EMERGENCY") > modes.index("NIGHT")
    assert soc > 50  # recharged by the next noon either way


def test_station_sensors_follow_the_protocol_fields() -> None:
    env = Environment(EQUATOR, local_time_h=9.0)
    st = Station(env, StationConfig())
    steps, _ = env.advance(env.t + 300)
    st.step(steps)
    s = st.sensors()
    for k in ("solar_voltage", "solar_current", "battery_voltage", "battery_current", "battery_soc", "battery_temp",
              "surface_temp", "electronics_temp", "radiator_temp", "sensor_head_temp", "enclosure_temp", "cpu_temp",
              "dose_rate", "count_rate"):
        assert isinstance(s[k], float) and math.isfinite(s[k]), k
    assert s["solar_voltage"] > 4.5 and s["battery_current"] > 0


def test_environment_is_deterministic_and_step_independent() -> None:
    def run(step: float) -> tuple[float, float]:
        env = Environment(EQUATOR, seed=11, local_time_h=15.0, quakes=[Quake(DEFAULT_START + 100, 4.0)])
        st = Station(env, StationConfig(battery_wh=20))
        t = env.t
        while t < env.start + 10 * DAY:
            t = min(t + step, env.start + 10 * DAY)
            steps, _ = env.advance(t)
            st.step(steps)
        return st.battery.soc, st.thermal.electronics_c

    a, b = run(900.0), run(2700.0)
    assert a == pytest.approx(b, rel=1e-6)

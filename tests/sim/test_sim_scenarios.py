"""Scenario tests: the real firmware on the MicroPython VM, real mosquitto, the link emulator.

Timing is never asserted: every wait has a generous deadline and fails with the node logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from sim.runner import Scenario, SimBase


def _diag(base: SimBase) -> str:
    out = [f"report: {json.dumps(base.report(), indent=1)}", f"events: {base.events[-30:]}"]
    for nid, node in base.nodes.items():
        out.append(f"--- {nid} log (tail) ---\n{node.log_tail(2500)}")
    if base.broker is not None:
        out.append(f"--- broker log ---\n{base.broker.log()[-1500:]}")
    return "\n".join(out)


async def wait_for(base: SimBase, what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for: {what}\n{_diag(base)}")
        await asyncio.sleep(0.25)


def _scenario(raw: dict[str, Any]) -> Scenario:
    base = {"seed": 5, "duration_s": 0, "acceleration": 1, "step_s": 0.5, "link": {"delay_s": 0}, "progress_s": 0}
    base.update(raw)
    return Scenario.from_dict(base, "test")


@pytest.mark.slow
async def test_outages_shorter_and_longer_than_the_journal() -> None:
    sc = _scenario(
        {
            "site": {"preset": "equator", "local_time_h": 10.0},
            "node": [
                {"id": "near"},  # default journal (8 x 16 KiB): minutes of telemetry
                {"id": "far", "firmware": {"journal": {"segment_bytes": 2048, "segments": 4}}},
            ],
        }
    )
    async with SimBase(sc) as base:
        acct = base.accounting
        assert acct is not None

        def delivered(n: str) -> int:
            return acct.report().get(n, {}).get("delivered", 0)

        await wait_for(base, "both nodes deliver telemetry", lambda: delivered("near") >= 8 and delivered("far") >= 8, 60)
        base.faults.link_cut("near", 4.0)
        base.faults.link_cut("far")
        await asyncio.sleep(25)  # far: about twice what its 8 KiB journal holds
        base.faults.link_restore("far")

        def caught_up(n: str) -> bool:
            r = acct.report().get(n, {})
            return r.get("pending", 99) <= 2 and r.get("produced", 0) > 30 and base.links[n].up

        await wait_for(base, "both nodes catch up after the outage", lambda: caught_up("near") and caught_up("far"), 90)
        await asyncio.sleep(2)
        rep = base.report()
        near, far = rep["near"], rep["far"]
        # shorter than the journal: nothing lost, nothing dropped
        assert near["dropped_oldest"] == 0, _diag(base)
        assert near["missing"] == 0 and near["lost"] == 0, _diag(base)
        # longer: the oldest packets dropped, and the node says exactly how many
        assert far["dropped_oldest"] > 0, _diag(base)
        assert far["missing"] == far["dropped_oldest"], _diag(base)
        assert far["lost"] == 0


@pytest.mark.slow
async def test_small_battery_goes_night_then_emergency_and_the_ground_sees_it() -> None:
    import paho.mqtt.client as mqtt

    sc = Scenario.load("lunar-night")
    sc.nodes = [n for n in sc.nodes if n.id == "small"]
    sc.duration_s = 0
    sc.progress_s = 0
    async with SimBase(sc) as base:
        acct = base.accounting
        assert acct is not None

        def hk_modes() -> list[str]:
            return list(acct.node("small").hk_modes)

        await wait_for(base, "HK mode NIGHT then EMERGENCY", lambda: "EMERGENCY" in hk_modes() and "NIGHT" in hk_modes(), 120)
        modes = hk_modes()
        assert modes.index("NIGHT") < modes.index("EMERGENCY"), modes
        # the ground's view: a fresh subscriber gets the retained status
        got: list[dict] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-ground")
        c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
        c.connect(base.broker_host, base.broker_port)
        c.subscribe(f"lunabase/{base.inventory.site}/small/status", 1)  # type: ignore[union-attr]
        c.loop_start()
        try:
            await wait_for(base, "retained status with mode EMERGENCY", lambda: any(s.get("mode") == "EMERGENCY" for s in got), 60)
        finally:
            c.loop_stop()
            c.disconnect()
        st = [s for s in got if s.get("mode") == "EMERGENCY"][-1]
        assert st["state"] in ("online", "asleep", "offline")
        statuses = acct.node("small").statuses
        assert ("asleep", "NIGHT") in statuses or ("online", "NIGHT") in statuses, statuses


@pytest.mark.slow
async def test_faults_corruption_brownout_broker_kill_sensor_dead() -> None:
    sc = _scenario(
        {
            "site": {"preset": "equator", "local_time_h": 10.0},
            "environment": {"deep_per_day": 0, "shallow_per_year": 0, "quake": [{"at_h": 0.003, "magnitude": 4.5}]},
            "node": [{"id": "f1"}],
        }
    )
    async with SimBase(sc) as base:
        acct = base.accounting
        assert acct is not None

        def rep() -> dict:
            return acct.report().get("f1", {})

        await wait_for(base, "telemetry", lambda: rep().get("delivered", 0) >= 5, 60)
        base.faults.corrupt("f1", 2)
        await wait_for(base, "2 corrupted PUBLISH payloads", lambda: base.links["f1"].stats.corrupted == 2, 30)
        base.faults.brownout("f1", off_s=2.0, torn_write=True)
        await wait_for(base, "a second boot", lambda: rep().get("boots", 0) >= 2, 60)
        base.faults.broker_kill(down_s=3.0)
        await asyncio.sleep(4.0)
        base.faults.sensor("f1", "battery_soc", "dead", duration_s=5.0)
        base.faults.clock_jump("f1", 0.0)
        produced_before = rep().get("produced", 0)
        await wait_for(
            base,
            "catching up after the faults",
            lambda: rep().get("produced", 0) > produced_before + 10 and rep().get("pending", 99) <= 2,
            90,
        )
        await wait_for(base, "SENSOR_FAULT event", lambda: acct.node("f1").events.get("SENSOR_FAULT", 0) >= 1, 30)
        await asyncio.sleep(1.5)
        r = rep()
        # only the corrupted messages' packets are gone: the brownout and the broker kill lose nothing
        assert r["dropped_oldest"] == 0, _diag(base)
        assert 1 <= r["lost"] == r["missing"] <= 2 * 20, _diag(base)
        assert r["rejected_bytes"] > 0
        assert acct.node("f1").events.get("BOOT", 0) >= 2
        # the scheduled M4.5 quake (≈ 95 µm/s²) reached the seismometer, far above the 0.05 µm/s² noise
        assert base.quake_log and acct.node("f1").seismic_peak > 20, (base.quake_log, acct.node("f1").seismic_peak)


@pytest.mark.slow
async def test_light_time_bandwidth_and_relay_windows_lose_nothing() -> None:
    sc = _scenario(
        {
            "site": {"preset": "shackleton", "local_time_h": 9.0},
            "link": {
                "delay_s": 1.28,
                "jitter_s": 0.05,
                "bandwidth_bps": 4000,
                "window": {"period_s": 14, "visible_s": 9},
            },
            "node": [{"id": "relay1"}],
        }
    )
    async with SimBase(sc) as base:
        acct = base.accounting
        assert acct is not None

        def rep() -> dict:
            return acct.report().get("relay1", {})

        await wait_for(base, "telemetry through the delayed link", lambda: rep().get("delivered", 0) >= 5, 60)
        await wait_for(base, "two relay windows closed", lambda: base.links["relay1"].stats.cuts >= 2, 60)
        # stop the windows, let the journal drain
        for t in base._tasks:
            if "drive" in repr(t.get_coro()):
                t.cancel()
        base.links["relay1"].restore()
        n0 = rep().get("produced", 0)
        await wait_for(
            # with 2.56 s round trip, ~2.5 packets/s wait for their PUBACK: pending stays near 6-10
            base, "the backlog drains", lambda: rep().get("produced", 0) > n0 + 5 and rep().get("pending", 99) <= 15, 90
        )
        await asyncio.sleep(3)
        r = rep()
        assert r["missing"] == 0 and r["dropped_oldest"] == 0, _diag(base)


async def test_direct_link_nodes_talk_to_the_broker_without_an_emulator() -> None:
    sc = _scenario({"link": {"direct": True}, "site": {"preset": "equator", "local_time_h": 10.0},
                    "node": [{"id": "d1"}]})
    assert sc.link_direct and sc.link_delay_s == 0
    async with SimBase(sc) as base:
        acct = base.accounting
        assert acct is not None
        await wait_for(base, "the node delivers telemetry", lambda: acct.report().get("d1", {}).get("delivered", 0) >= 3,
                       60)
        assert base.links == {}  # no proxy in between
        cfg = json.loads((base.nodes["d1"].dir / "config.json").read_text())
        assert (cfg["broker"]["host"], cfg["broker"]["port"]) == (base.broker_host, base.broker_port)
        rep = base.report()["d1"]
        assert rep["link_cuts"] == 0 and rep["corrupted"] == 0
        with pytest.raises(ValueError, match="no link emulator"):
            base.faults.link_cut("d1")

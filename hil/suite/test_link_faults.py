"""Link faults injected from the test: loss of signal, light time, brown-out, a broken sensor."""

from __future__ import annotations

import time

import pytest

from wire import defs

pytestmark = [pytest.mark.hil, pytest.mark.slow]


def _hk(ground, node, **kw):
    return ground.await_telemetry(lambda s: s.node == node.id and s.packet == "HK", **kw)


def test_link_cut_loses_nothing(node, ground) -> None:
    _hk(ground, node, timeout=30)
    node.cut_link()
    time.sleep(4)  # the node keeps sampling into its journal
    t_restore = time.monotonic()
    node.restore_link()
    ground.await_telemetry(lambda s: s.node == node.id and s.packet == "HK" and s.received > t_restore, timeout=60)
    # every HK sequence count between the first and the newest arrived (journal replayed)
    ground.await_telemetry(
        lambda s: _contiguous([x.seq for x in ground.samples if x.node == node.id and x.packet == "HK"]), timeout=60
    )


def _contiguous(seqs: list[int]) -> bool:
    if len(seqs) < 2:
        return False
    have = set(seqs)
    lo, hi = min(seqs), max(seqs)
    return all(s in have for s in range(lo, hi + 1))


def test_light_time_delays_but_commands_complete(node, ground) -> None:
    _hk(ground, node, timeout=30)
    node.light_time(1.3)
    t0 = time.monotonic()
    ground.send_and_assert_command(node.id, "PING", timeout=60)
    assert time.monotonic() - t0 >= 2 * 1.3 - 0.1  # a round trip cannot beat light
    node.light_time(0)


def test_brown_out_reboots_the_node(node, ground) -> None:
    first = _hk(ground, node, timeout=30)
    node.power_cycle()
    ground.await_telemetry(
        lambda s: s.node == node.id and s.packet == "HK" and s["boot_count"] > first["boot_count"], timeout=90
    )


def test_dead_sensor_is_reported(node, ground) -> None:
    node.break_sensor("battery_voltage", "dead")
    ev = ground.await_event(name="SENSOR_FAULT", node=node.id, predicate=lambda s: s["arg1"] == 0, timeout=60)
    # arg0 = the sensor (POWER reads battery_voltage), arg1 = 0 dead / 1 recovered
    assert (ev["severity"], ev["arg0"]) == ("WARNING", defs.SENSOR_POWER), ev
    node.break_sensor("battery_voltage", None)
    ok = ground.await_event(name="SENSOR_FAULT", node=node.id, predicate=lambda s: s["arg1"] == 1, timeout=60)
    assert (ok["severity"], ok["arg0"]) == ("INFO", defs.SENSOR_POWER), ok

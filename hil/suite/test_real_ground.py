"""The node under test against the real ground segment (ingest, archive, alarms, commander)."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.hil, pytest.mark.slow]


def test_ground_ingests_commands_and_raises_no_alarm(gds, node) -> None:
    hk = gds.api.await_telemetry(lambda s: s.node == node.id and s.packet == "HK", timeout=60)
    assert hk["free_heap"] > 0
    done = gds.api.send_and_assert_command(node.id, "PING", timeout=60)
    assert done["stage"] == "EXECUTED"
    # through the client interface, logged in: the audit names the account
    remote = gds.remote.send_and_assert_command(node.id, "PING", timeout=60)
    assert remote["stage"] == "EXECUTED" and remote["user"] == "hil"
    gds.api.assert_no_alarm(node=node.id)


def test_ground_alarms_on_a_hot_battery(gds, node, ground) -> None:
    if node.bus is None:
        pytest.skip("needs a sim board to force a sensor value")
    node.set_sensor(battery_temp=70.0)  # red limit: 60 degC
    gds.api.await_telemetry(lambda s: s.node == node.id and s.packet == "POWER" and s["battery_temp"] > 60, timeout=60)
    deadline = time.monotonic() + 60
    while True:  # the alarm opens once the field's persistence is reached
        try:
            gds.api.assert_no_alarm(node=node.id, param="POWER.battery_temp")
        except AssertionError as e:
            assert "battery_temp" in str(e)
            break
        assert time.monotonic() < deadline, "the ground raised no alarm for a 70 degC battery"
        time.sleep(0.5)
    with pytest.raises(AssertionError, match="battery_temp"):
        ground.assert_no_alarm(node=node.id)  # the HIL ground's own limit check agrees

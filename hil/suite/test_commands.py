"""Telecommands: signed commands execute, forged or replayed ones are rejected."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.hil, pytest.mark.slow]


def test_ping_executes(node, ground) -> None:
    ack = ground.send_and_assert_command(node.id, "PING", timeout=30)
    assert ack["reason"] in ("OK", 0)


def test_set_rate_changes_the_housekeeping_period(node, ground) -> None:
    ground.send_and_assert_command(node.id, "SET_RATE", {"sensor": "POWER", "period_ms": 500}, timeout=30)
    import time

    t0 = time.monotonic()
    ground.await_telemetry(lambda s: s.node == node.id and s.packet == "POWER" and s.received > t0, timeout=30)
    n0 = sum(1 for s in ground.samples if s.node == node.id and s.packet == "POWER" and s.received > t0)
    ground.await_telemetry(
        lambda s: sum(1 for x in ground.samples if x.node == node.id and x.packet == "POWER" and x.received > t0) >= n0 + 4,
        timeout=30,
    )


def test_command_with_a_wrong_key_is_rejected(node, ground) -> None:
    ground.send_and_assert_command(node.id, "PING", key=b"\x00" * 32, expect="REJECTED", timeout=30)
    ground.send_and_assert_command(node.id, "PING", timeout=30)  # the real key still works

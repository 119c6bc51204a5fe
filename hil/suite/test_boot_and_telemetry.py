"""The node boots, announces itself and streams housekeeping within limits."""

from __future__ import annotations

import itertools

import pytest

from wire import ccsds

pytestmark = [pytest.mark.hil, pytest.mark.slow]


def test_birth_and_housekeeping(node, ground) -> None:
    st = ground.await_status(node.id, "online", timeout=30)
    assert st["fw"] and st["mode"] in ("DAY", "NIGHT", "EMERGENCY", "SAFE")
    hk = ground.await_telemetry(lambda s: s.node == node.id and s.packet == "HK", timeout=30)
    assert hk["free_heap"] > 0
    ground.await_event(name="BOOT", node=node.id, timeout=30)
    ground.await_telemetry(lambda s: s.node == node.id and s.packet == "POWER", timeout=30)
    ground.assert_no_alarm(node=node.id)
    assert not ground.rejected, f"the ground rejected bytes: {dict(ground.rejected)}"


def test_sequence_counts_increase_without_gaps(node, ground) -> None:
    ground.await_telemetry(lambda s: s.node == node.id and s.packet == "HK" and s["uptime"] >= 3, timeout=60)
    seqs = [s.seq for s in ground.samples if s.node == node.id and s.packet == "HK"]
    assert len(seqs) >= 2
    assert all((b - a) % ccsds.SEQ_MOD == 1 for a, b in itertools.pairwise(seqs)), seqs


def test_soft_reset_reboots_and_counts_the_boot(node, ground) -> None:
    first = ground.await_telemetry(lambda s: s.node == node.id and s.packet == "HK", timeout=30)
    node.reset()
    hk = ground.await_telemetry(
        lambda s: s.node == node.id and s.packet == "HK" and s["boot_count"] > first["boot_count"], timeout=60
    )
    assert hk["boot_count"] == first["boot_count"] + 1

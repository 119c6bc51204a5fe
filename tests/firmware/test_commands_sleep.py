"""Commands that respect sleep and validity, end to end: the real firmware on the MicroPython VM
behind the Earth-Moon link emulator, a real mosquitto, the real ground service.

- A command sent while the node sleeps is HELD by the ground (not released into the sleep),
  released one light time before the node's announced contact, executed at its wake, and
  never TIMED_OUT.
- A TC whose validity window passes on its way is refused by the node itself (REJECTED,
  reason EXPIRED, in the command's history).
- An ACK that comes after the ground gave up (TIMED_OUT) is a LATE_* entry in the history.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import pytest

from ground.ops import ASLEEP, ONLINE
from ground.service import GroundService
from sim.link import LinkProxy
from wire import defs
from wire.inventory import Inventory, Node

from firmware_helpers import KEY, SITE, node_config


def _inventory() -> Inventory:
    return Inventory(SITE, [Node("n01", KEY, "pw", hk_period_s=1.0)])


async def _until(pred: Any, timeout: float, what: str, node: Any = None, detail: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {detail() if detail else ''}\n"
                                 f"{node.log() if node else ''}")
        await asyncio.sleep(0.05)


def _cfg(port: int, **power: int) -> dict[str, Any]:
    cfg = node_config(port, rates={"hk_ms": 1000, "power_ms": 2000, "thermal_ms": 4000, "radiation_ms": 4000,
                                   "seismic_hz": 0},
                      power={"sleep_s": 3, "awake_s": 1, "night_hk_s": 2, **power})
    cfg["broker"].update(keepalive=10, window=16)  # a 2.56 s round trip needs messages in flight
    return cfg


def _ground(url: str, tmp_path: Any, light_time: float, time_sync_s: float) -> GroundService:
    return GroundService(url, _inventory(), f"sqlite:///{tmp_path}/archive.db", api_port=0, light_time=light_time,
                         time_sync_s=time_sync_s, client_id=f"g-{os.getpid()}-{time.monotonic_ns()}")


@pytest.mark.slow
async def test_command_for_a_sleeping_node_is_held_and_runs_at_its_wake(broker, make_node, tmp_path) -> None:
    lt = 1.28
    link = await LinkProxy(broker.host, broker.port, delay=lt, name="n01").start()
    # sleeps of 12 s: longer than the ACK timeout plus the round trip (5 + 2.56 s), so a
    # command released into the sleep would be TIMED_OUT before the node could answer
    node = make_node(_cfg(link.port, sleep_s=12), "n01", heap="128K")
    g = _ground(broker.url, tmp_path, lt, 600)
    try:
        await g.start()
        await g.wait_connected()
        ops = g.ops
        assert ops is not None
        tk = ops.timekeeper
        seen: list[tuple[str, float]] = []
        ops.nodes.listeners.append(lambda info, old: seen.append((info.state, time.time())))
        node.start()
        await _until(lambda: tk.get("n01").syncs >= 1 and tk.get("n01").pending is None
                     and not tk.get("n01").refine, 60, "the node online and its clock synced", node, lambda: tk.view("n01"))
        night = await ops.commander.submit("n01", "SET_MODE", {"mode": "NIGHT", "duration_s": 600}, user="test",
                                           confirm=True)
        if night["stage"] == "AWAITING_APPROVAL":  # hazardous: the two-person rule
            await ops.commander.approve(night["id"], "test2")
        assert (await ops.commander.wait(night["id"], 30))["stage"] == "EXECUTED"
        await _until(lambda: ops.nodes.get("n01").state == ASLEEP, 30, "the node's sleep announcement", node)
        # the next two sleeps: the first is the one we command into
        held_at = time.time()
        hold = ops.hold("n01")
        wake = ops.wake("n01")
        assert hold is not None and hold[0] is not None and wake is not None
        assert wake - held_at > 5, (wake - held_at, hold)  # announced 12 s of sleep from a moment ago
        row = await ops.commander.submit("n01", "SET_RATE", {"sensor": "HK", "period_ms": 2000}, user="test")
        assert row["stage"] == "HELD", row
        assert "asleep until" in row["reason"] and "released at" in row["reason"]
        done = await ops.commander.wait(row["id"], 60)
        stages = [h[0] for h in done["history"]]
        print("history:", [(h[0], round(h[1] - held_at, 2), h[2]) for h in done["history"]])
        print("liveness:", [(s, round(t - held_at, 2)) for s, t in seen if t >= held_at])
        assert done["stage"] == "EXECUTED", done
        assert stages == ["QUEUED", "HELD", "SENT", "ACCEPTED", "EXECUTED"], stages
        t_sent = next(h[1] for h in done["history"] if h[0] == "SENT")
        # released for the contact: not before its release time (wake − light time), and
        # before the ground heard the node again (which is a round trip after its wake)
        assert t_sent >= hold[0] - 0.05, (t_sent - held_at, hold)
        back = [t for s, t in seen if s == ONLINE and t > held_at]
        assert back and t_sent < back[0], (t_sent - held_at, [b - held_at for b in back])
        # the node ran it at its wake, not before: its EXECUTED ack is stamped after it
        acks = g.archive.table("ACK", node="n01", columns=["tc_counter", "stage"])
        mine = (acks["tc_counter"] == done["counter"]) & (acks["stage"] == defs.ACK_STAGE_EXECUTED)
        assert mine.sum() == 1
        t_exec = float(acks["time"][mine][0])
        print(f"announced wake {wake - held_at:.2f} s, released {t_sent - held_at:.2f} s, "
              f"executed (node time) {t_exec - held_at:.2f} s after the hold")
        assert t_exec >= wake - 0.1, (t_exec - held_at, wake - held_at)
        # it took effect: HK now every 2 s
        await _until(lambda: ops.latest.get("n01", {}).get("HK", {}).get("values", {}).get("hk_period") == 2,
                     30, "HK period 2 s reported", node)
        assert not [e for e in ops.store.events(kind="command", limit=200) if "TIMED_OUT" in e["message"]]
    finally:
        await g.stop()
        await link.stop()


@pytest.mark.slow
async def test_window_passed_in_flight_is_refused_by_the_node_and_a_late_ack_is_recorded(
        broker, make_node, tmp_path) -> None:
    lt = 3.0  # long enough that a window of ~1 s closes while the TC travels
    link = await LinkProxy(broker.host, broker.port, delay=lt, name="n01").start()
    cfg = _cfg(link.port)
    cfg["broker"]["connect_timeout_ms"] = 15000  # CONNECT/CONNACK is a 6 s round trip here
    node = make_node(cfg, "n01", heap="128K")
    # no automatic time sync: the node's clock is the host's (rtc), the window is judged on it
    g = _ground(broker.url, tmp_path, lt, -1)
    try:
        await g.start()
        await g.wait_connected()
        ops = g.ops
        assert ops is not None
        cmd = ops.commander
        node.start()
        await _until(lambda: ops.nodes.get("n01").state == ONLINE and ops.latest.get("n01", {}).get("HK"), 60,
                     "the node online", node)
        ping = await cmd.submit("n01", "PING", user="test")  # the link works: a command without a window runs
        assert (await cmd.wait(ping["id"], 40))["stage"] == "EXECUTED"
        now = time.time()
        row = await cmd.submit("n01", "PING", user="test", not_after=now + 1.0)
        assert row["stage"] == "SENT"  # valid when it left
        done = await cmd.wait(row["id"], 40)
        print("expired in flight:", done["stage"], done["reason"], [h[0] for h in done["history"]])
        assert done["stage"] == "REJECTED" and done["reason"] == "EXPIRED", done
        evs = g.archive.table("EVENT", node="n01", columns=["code", "arg0", "arg1"])
        refused = (evs["code"] == defs.EVENT_TC_REJECTED) & (evs["arg1"] == done["counter"])
        assert refused.sum() == 1 and int(evs["arg0"][refused][0]) == defs.ACK_REASON_EXPIRED
        # a ground that believes the node is close (no light time, 0.3 s to answer) gives up
        # before the node's ACKs can come back; they come, and land in the history as LATE_*
        cmd.light_time, cmd.ack_timeout = 0.0, 0.3
        late = await cmd.submit("n01", "PING", user="test")
        assert (await cmd.wait(late["id"], 10))["stage"] == "TIMED_OUT"

        def history() -> list[str]:
            r = cmd.get(late["id"])
            return [h[0] for h in r["history"]] if r else []

        await _until(lambda: "LATE_EXECUTED" in history(), 30, "the late ACKs", node, history)
        r = cmd.get(late["id"])
        assert r is not None and r["stage"] == "TIMED_OUT"  # final stays final
        assert history()[-2:] == ["LATE_ACCEPTED", "LATE_EXECUTED"], history()
        stored = ops.store.commands(cid=late["id"])[0]
        assert [h[0] for h in stored["history"]][-2:] == ["LATE_ACCEPTED", "LATE_EXECUTED"]
        assert np.isin(["LATE_EXECUTED"], [e["data"].get("stage") for e in ops.store.events(kind="command")]).all()
    finally:
        await g.stop()
        await link.stop()

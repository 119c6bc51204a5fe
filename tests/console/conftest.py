"""A running ground (the real GroundService on a private mosquitto) and simulated nodes.

``base`` starts, in the test's event loop:

* the real ``ground.service.GroundService`` (ingest → archive → operations → HTTP/WS API),
* three simulated nodes on the same broker (``SimBase``): n01 healthy, n02 with a battery
  far below its red limit (so the ground raises a CRITICAL alarm), n03 announcing sleep.
  Each answers telecommands through ``ground.testing.FakeNode``, which verifies every TC
  with ``wire.ccsds.open_tc`` and replies with ACK packets (ACCEPTED, then EXECUTED).
  Telemetry packets are built with ``wire.ccsds.PacketBuffer`` (``ground.testing.make_packet``).

The console under test talks to the ground only through ``ground.client.GroundClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ground.auth import AccountStore
from ground.service import GroundService
from ground.testing import FakeNode, add_test_accounts, make_packet
from lunabase import ROOT
from sim.mosquitto import Mosquitto
from wire import defs
from wire.ccsds import EPOCH_UNIX as EPOCH_2000
from wire.inventory import Inventory

SHOTS = ROOT / "artifacts" / "console"


@dataclass
class SimBase:
    """The simulated nodes: their FakeNodes and the telemetry task."""

    nodes: dict[str, FakeNode]
    task: asyncio.Task[None] | None = None
    sent: int = 0
    low_battery: set[str] = field(default_factory=lambda: {"n02"})

    async def telemetry(self, period: float = 0.25) -> None:
        """HK/POWER/THERMAL/RADIATION every ``period`` s, a seismic batch every 4th round."""
        k = 0
        for nid in ("n01", "n02"):
            await self.nodes[nid].publish_status("online", mode="DAY", boot=3)
            await self.nodes[nid].publish_tm(make_packet("EVENT", node=nid, code=1, severity=0, text="booted", arg0=3))
        sleeper = self.nodes["n03"]
        await sleeper.publish_tm(make_packet("HK", node="n03", mode="NIGHT", free_heap=60000, boot_count=9))
        await sleeper.publish_status("asleep", mode="NIGHT", boot=9, next_contact=time.time() - EPOCH_2000 + 3600)
        while True:
            k += 1
            for nid in ("n01", "n02"):
                n = self.nodes[nid]
                soc = 4.0 if nid in self.low_battery else 82.0 + math.sin(k / 10)
                pk = [
                    make_packet("HK", node=nid, uptime=1000 + k, boot_count=3, mode="EMERGENCY" if nid == "n02" else "DAY",
                                free_heap=60000 + 100 * (k % 7), loop_lag=12, link_state="UP", cpu_temp=31 + math.sin(k / 5),
                                hk_period=1, flags=defs.HK_FLAG_SYNCED),  # they stamp real time
                    make_packet("POWER", node=nid, solar_voltage=5.1, solar_current=0.3,
                                battery_voltage=3.3 if nid in self.low_battery else 3.95, battery_current=0.12,
                                battery_soc=soc, battery_temp=18 + math.sin(k / 7), load_power=1.2),
                    make_packet("THERMAL", node=nid, surface_temp=-20 + k % 5, electronics_temp=21 + 2 * math.sin(k / 6),
                                radiator_temp=-5, sensor_head_temp=10, enclosure_temp=15),
                    make_packet("RADIATION", node=nid, dose_rate=57 + (k % 9), counts=1200 + k, interval=1000,
                                total_dose=100 + k / 10),
                ]
                if k % 4 == 0:
                    i = np.arange(100) + 100 * (k // 4)
                    samples = np.stack([40 * np.sin(i / 6) * np.exp(-(i % 400) / 300),
                                        25 * np.sin(i / 9), 10 * np.cos(i / 4)], axis=1)
                    pk.append(make_packet("SEISMIC", node=nid, rate=100, samples=samples))
                await n.publish_tm(*pk)
                self.sent += len(pk)
            await asyncio.sleep(period)


@dataclass
class Base:
    """What a console test gets: the ground service, its URL and the simulated nodes."""

    ground: GroundService
    url: str
    sim: SimBase
    broker: Mosquitto
    tmp: Path


@pytest.fixture
async def base(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Base]:
    inv = Inventory.generate("shackleton", ["n01", "n02", "n03", "n04"])  # n04: the real firmware (optional)
    g = GroundService(f"mqtt://{broker.host}:{broker.port}", inv, archive=f"sqlite:///{tmp_path}/archive.db",
                      ops_db=tmp_path / "ops.db", api_port=0, light_time=0.0, ack_timeout=20.0,
                      exec_timeout=30.0, users=AccountStore.open(tmp_path / "users.json", create=True))
    add_test_accounts(g.users)  # the console logs in like any client (accounts file 0600, sessions beside it)
    await g.start()
    await g.wait_connected(30)
    nodes = {n.id: FakeNode(broker.host, broker.port, inv.site, n.id, n.key) for n in inv.nodes}
    async with contextlib.AsyncExitStack() as stack:
        for n in nodes.values():
            await stack.enter_async_context(n)
        sim = SimBase(nodes)
        sim.task = asyncio.create_task(sim.telemetry())
        try:
            yield Base(g, g.api.url, sim, broker, tmp_path)  # type: ignore[union-attr]
        finally:
            sim.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sim.task
            await g.stop()


@pytest.fixture
async def firmware_node(base: Base, tmp_path: Path, micropython_bin: str, firmware_image: Path) -> AsyncIterator[str]:
    """The real node firmware (the session's ``firmware_image``, compiled with mpy-cross) on
    the MicroPython unix port, as node ``n04`` of the ``base`` inventory, on the same broker."""
    import json
    import os
    import subprocess

    mp, fw = micropython_bin, firmware_image
    node = base.ground.inventory.node("n04")
    home = tmp_path / "n04"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({
        "node": "n04", "site": base.ground.inventory.site, "board": "sim", "key": node.key.hex(),
        "broker": {"host": base.broker.host, "port": base.broker.port},
        "rates": {"hk_ms": 1000, "power_ms": 2000, "thermal_ms": 2000, "radiation_ms": 2000, "seismic_hz": 0},
        "health": {"wdt_ms": 0},
    }))
    log = open(home / "node.log", "wb")
    env = dict(os.environ, MICROPYPATH=f".frozen:{fw / 'lib'}")
    # 128K: at the time of writing the firmware hits MemoryError in connect with 100K on the 64-bit unix port
    proc = subprocess.Popen([mp, "-X", "heapsize=128K", str(fw / "main.py")], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield "n04"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        print("firmware node log (tail):\n" + (home / "node.log").read_text(errors="replace")[-2000:])

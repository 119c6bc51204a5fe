"""The demo's nodes run in custody mode and the ground confirms their packets, end to end:
the real firmware on the MicroPython VM (the demo scenario's node, built by
``lunabase.demo.demo_base`` as `lunabase demo` does), a real mosquitto, the real ground
service on SQLite with its custody sender (docs/custody.md "Which nodes have it on").

The node's own figures reach the ground in its status, which it sends at every connect:
the test cuts the node's link once, so the status of the new session says how many
packets the node let go on the ground's word."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ground.service import GroundService
from lunabase.demo import DEMO_CUSTODY_S, demo_base
from sim.mosquitto import Mosquitto
from sim.runner import Scenario
from wire.inventory import Inventory


async def _until(what: str, cond: Callable[[], bool], timeout: float, diag: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for: {what}\n{diag()}")
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_demo_nodes_keep_packets_until_the_ground_confirms_them(tmp_path: Path) -> None:
    sc = Scenario.load("demo")
    sc.nodes = sc.nodes[:1]  # alpha, with the demo's defaults (firmware overrides included)
    sc.faults = []
    sc.link_delay_s, sc.link_jitter_s, sc.progress_s = 0.2, 0.0, 0  # a short light time: a cheap test
    nid = sc.nodes[0].id
    inv = Inventory.generate(sc.site_id, [nid])
    broker = Mosquitto(workdir=tmp_path / "broker").start()
    ground = GroundService(broker.url, inv, archive=f"sqlite:///{tmp_path / 'archive.db'}", api_port=0,
                           light_time=sc.link_delay_s, time_sync_s=-1)
    base: Any = None

    def statuses() -> list[dict[str, Any]]:
        return [st for st in ground.archive.status_history(node=nid, site=inv.site)
                if isinstance(st.get("custody"), list)]

    def diag() -> str:
        cu = ground.custody.view() if ground.custody is not None else None
        log = base.nodes[nid].log_tail(2500) if base is not None and nid in base.nodes else ""
        return f"custody {cu}\nstatuses {statuses()[-3:]}\n--- {nid} log ---\n{log}"

    try:
        await ground.start()
        await ground.wait_connected(30)
        assert ground.custody is not None  # the ground's default: custody acknowledgements every second
        base = demo_base(sc, ground, broker.url, tmp_path / "sim", inv)
        await base.start()
        cfg = json.loads((base.nodes[nid].dir / "config.json").read_text())
        assert cfg["journal"]["custody_s"] == DEMO_CUSTODY_S > 0, cfg.get("journal")

        def confirmed_by_ground() -> int:
            return int(ground.custody.view().get(nid, {}).get("confirmed", 0))

        await _until("the ground to confirm custody of the node's packets", lambda: confirmed_by_ground() >= 10,
                     90, diag)
        # a new session: the node's status at connect carries its custody figures of this boot
        # (again, a few times at most, if the acknowledgements were still on their way)
        link = base.links[nid]
        for _ in range(4):
            seen = len(statuses())
            link.cut()
            await asyncio.sleep(1.0)
            link.restore()
            await _until("a status from the new session", lambda n=seen: len(statuses()) > n, 60, diag)
            if any(st["custody"][0] > 0 for st in statuses()):
                break
            await asyncio.sleep(2.0)
        done = [s for s in statuses() if s["custody"][0] > 0]
        assert done, f"no status says the node let confirmed packets go\n{diag()}"
        st = done[-1]
        confirmed, resends, rejected = st["custody"][:3]
        assert rejected == 0, st  # every acknowledgement the ground sent passed the node's check
        # the node cannot have let go more than the ground confirmed to it
        assert 0 < confirmed <= confirmed_by_ground(), (st, ground.custody.view())
        print(f"demo node {nid} in custody mode (custody_s {DEMO_CUSTODY_S}): node confirmed {confirmed}, "
              f"re-sends {resends}; ground {ground.custody.view()[nid]}")
    finally:
        if base is not None:
            await base.stop()
            base.cleanup()
        await ground.stop()
        broker.close()

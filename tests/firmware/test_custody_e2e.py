"""Custody to the archive, end to end (docs/custody.md): the real firmware on the MicroPython VM
(100 KB heap, journal.custody_s set), a real mosquitto, the real ground service on SQLite with
its custody sender, the simulator's accounting subscriber as the independent record of what
the node produced.

(a) The ground is down (stopped) while the node streams; the broker, holding those messages
    for the ground's persistent session, is SIGKILLed and its persistence file deleted (a
    host power loss before the next autosave), then restarted, then the ground: every
    packet the node produced is archived once, although the broker had acknowledged (and
    then lost) part of them.
(b) A UART node behind `lunabase gateway` (a real subprocess): the gateway is SIGKILLed
    mid-stream and restarted: nothing lost, nothing archived twice.
(c) The node's link is cut longer than its (small) journal holds: the node drops the
    oldest packets and counts them; its status tells the ground which counts it dropped, so
    custody goes on at once (no give-up wait); what the archive lacks is exactly what the
    ground skipped, never more than the node's own drop count.

Compared: per APID, the archive holds every sequence count from 0 to the highest the node
produced (the accounting's and the archive's view), each exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import tty
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ground.archive import open_archive
from ground.service import GroundService
from sim.accounting import Accounting
from sim.link import LinkProxy
from sim.mosquitto import Mosquitto
from wire import custody, topics
from wire.dictionary import load
from wire.inventory import Inventory, Node

from firmware_helpers import KEY, SITE, node_config

CUSTODY_S = 3  # the node re-sends what the ground has not confirmed after this long


def _inventory() -> Inventory:
    return Inventory(SITE, [Node("n01", KEY, "pw", hk_period_s=0.5)])


async def _until(pred, timeout: float, what: str, detail=None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {detail() if detail else ''}")
        await asyncio.sleep(0.1)


def _archived(url: str) -> Counter[tuple[int, int]]:
    """(apid, seq) -> rows in the archive for n01."""
    with open_archive(url) as a:
        return Counter((p.apid, p.seq) for p in a.raw_packets(node="n01", limit=1_000_000))


def _complete(archive: Counter[tuple[int, int]], acct: Accounting) -> bool:
    """Every count up to the highest produced (accounting) or archived one is archived, per APID."""
    produced = {apid: c.produced for apid, c in acct.node("n01").apids.items()}
    for apid in set(produced) | {a for a, _ in archive}:
        top = max([s for a, s in archive if a == apid] + [produced.get(apid, 0) - 1])
        if any((apid, s) not in archive for s in range(top + 1)):
            return False
    return True


def _check(archive: Counter[tuple[int, int]], acct: Accounting) -> dict[str, Any]:
    """No packet archived twice; every count up to the highest archived one is there (the
    caller took ``archive`` when it was complete against the accounting); -> figures."""
    dup = {k: n for k, n in archive.items() if n > 1}
    assert not dup, f"archived more than once: {sorted(dup)[:20]}"
    missing = {a: [s for s in range(max(x for b, x in archive if b == a) + 1) if (a, s) not in archive]
               for a in {a for a, _ in archive}}
    assert not any(missing.values()), f"produced but not archived: {missing}"
    produced = {apid: c.produced for apid, c in acct.node("n01").apids.items()}
    return {"archived": sum(archive.values()), "produced_seen_by_accounting": sum(produced.values())}


def _custody_status(url: str) -> list[int]:
    """The node's own custody counters from its latest status: [confirmed, re-sends, rejected acks]."""
    with open_archive(url) as a:
        sts = [st for st in a.status_history(node="n01") if isinstance(st.get("custody"), list)]
    assert sts, "no status with custody counters"
    return sts[-1]["custody"]


def _diag(g: GroundService | None, node: Any) -> str:
    cu = g.custody.view() if g is not None and g.custody is not None else None
    return f"custody {cu}\n--- node log ---\n{node.log()[-3000:]}"


def _forge(port: int) -> None:
    """A custody acknowledgement signed with the wrong key, claiming everything archived."""
    import paho.mqtt.client as mqtt

    msg = custody.build(bytes(32), b"n01", 2**31, dict.fromkeys(range(8), 8000))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topics.topic(SITE, "n01", topics.CMD), msg, qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.mark.slow
@pytest.mark.parametrize("persistence", ["deleted", "last_autosave"])
async def test_broker_power_loss_while_the_ground_is_down_loses_nothing(make_node, tmp_path: Path,
                                                                        persistence: str) -> None:
    broker = Mosquitto(workdir=tmp_path / "broker").start()
    acct = Accounting(broker.host, broker.port, SITE).start()
    url = f"sqlite:///{tmp_path}/archive.db"
    cfg = node_config(broker.port, journal={"custody_s": CUSTODY_S},
                      rates={"hk_ms": 500, "power_ms": 1000, "thermal_ms": 2000, "radiation_ms": 2000, "seismic_hz": 0})
    node = make_node(cfg, "n01")  # the default 100 KB heap
    cid = f"g-{os.getpid()}-{time.monotonic_ns()}"

    def ground() -> GroundService:
        return GroundService(broker.url, _inventory(), url, ops_db=tmp_path / "ops.db", api_port=0,
                             custody_s=0.5, client_id=cid, time_sync_s=-1)

    g: GroundService | None = ground()
    try:
        assert acct.wait_connected()
        await g.start()
        await g.wait_connected()
        node.start()
        # steady state: the ground acknowledges, the node lets go
        await _until(lambda: g.custody.view().get("n01", {}).get("sent", 0) >= 4, 60, "custody acks",
                     lambda: _diag(g, node))
        # the ground goes down; the broker keeps the node's messages for its persistent session
        await g.stop()
        g = None
        down = time.time()
        # a forged acknowledgement (wrong key) claiming everything: the node must not let go
        _forge(broker.port)
        await asyncio.sleep(1.5)
        saved = {f.name: f.read_bytes() for f in broker.dir.glob("*.db")}  # an autosave (every 1 s)
        assert saved or persistence == "deleted"
        await asyncio.sleep(3.0)
        seen_before_kill = {(a, s) for a, c in acct.node("n01").apids.items() for s in c.seqs}
        archived_before_kill = set(_archived(url))
        # host power loss: SIGKILL, and what was not saved is gone: the persistence file
        # deleted, or put back as it was at an autosave 3 s before the kill
        broker.kill()
        for f in broker.dir.glob("*.db"):
            f.unlink()
        if persistence == "last_autosave":
            for name, data in saved.items():
                (broker.dir / name).write_bytes(data)
        await asyncio.sleep(1.0)
        broker.start()
        g = ground()
        await g.start()
        await g.wait_connected()
        lost_at_broker = seen_before_kill - archived_before_kill
        # the broker had acknowledged (then lost) packets the archive never got
        assert len(lost_at_broker) >= 4, (len(lost_at_broker), time.time() - down)

        snap: list[Counter[tuple[int, int]]] = []

        def caught_up() -> bool:  # the snapshot the final check reads: complete when taken
            snap[:] = [_archived(url)]
            return lost_at_broker <= set(snap[0]) and _complete(snap[0], acct)

        await _until(caught_up, 90, "every packet lost at the broker to be re-sent and archived",
                     lambda: _diag(g, node))
        # a little more live streaming after the recovery, then compare everything
        await asyncio.sleep(2.0)
        await _until(caught_up, 30, "the archive to catch up", lambda: _diag(g, node))
        figures = _check(snap[0], acct)
        # the node says what custody did: packets confirmed by the ground, the forged
        # acknowledgement rejected (status "custody": confirmed, re-sends, rejected)
        st = _custody_status(url)
        assert st[0] > 0 and st[2] >= 1, st
        print(f"broker power loss ({persistence}): {len(lost_at_broker)} packets acknowledged by the broker and lost with it, "
              f"all re-sent and archived; {figures}; custody {g.custody.view()['n01']}")
    finally:
        if g is not None:
            await g.stop()
        acct.stop()
        broker.close()


@pytest.mark.slow
async def test_gateway_sigkill_loses_nothing(broker, make_node, tmp_path: Path) -> None:
    m, s = os.openpty()
    tty.setraw(s)
    os.set_blocking(m, False)  # the node's end: a full buffer must not stall the VM
    port = tmp_path / "ttyNODE"
    port.symlink_to(os.ttyname(s))
    os.close(s)
    acct = Accounting(broker.host, broker.port, SITE).start()
    url = f"sqlite:///{tmp_path}/archive.db"
    cfg = node_config(broker.port, journal={"custody_s": CUSTODY_S},
                      rates={"hk_ms": 500, "power_ms": 1000, "thermal_ms": 2000, "radiation_ms": 2000, "seismic_hz": 0})
    cfg["link"] = "uart"
    cfg["uart"] = {"fd": m, "status_s": 2}
    node = make_node(cfg, "n01")
    node.pass_fds = (m,)
    g = GroundService(broker.url, _inventory(), url, ops_db=tmp_path / "ops.db", api_port=0, custody_s=0.5,
                      client_id=f"g-{os.getpid()}-{time.monotonic_ns()}", time_sync_s=-1)
    gw_log = open(tmp_path / "gateway.log", "ab")

    def gateway() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "lunabase.cli", "gateway", "--port", str(port), "--node", "n01",
                                 "--broker", broker.url, "--site", SITE], stdout=gw_log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    gw = gateway()
    kills = 0
    try:
        assert acct.wait_connected()
        await g.start()
        await g.wait_connected()
        node.start()
        await _until(lambda: len(_archived(url)) >= 10, 60, "telemetry through the gateway", lambda: _diag(g, node))
        # SIGKILL the gateway mid-stream, three times, each time restarted after a moment
        for _ in range(3):
            await asyncio.sleep(1.5)
            gw.send_signal(signal.SIGKILL)
            gw.wait()
            kills += 1
            await asyncio.sleep(1.0)
            gw = gateway()
        n0 = len(_archived(url))
        await _until(lambda: len(_archived(url)) >= n0 + 10, 60, "telemetry after the restarts", lambda: _diag(g, node))

        snap: list[Counter[tuple[int, int]]] = []

        def caught_up() -> bool:  # the snapshot the final check reads: complete when taken
            snap[:] = [_archived(url)]
            return _complete(snap[0], acct)

        await _until(caught_up, 60, "every produced packet archived", lambda: _diag(g, node))
        figures = _check(snap[0], acct)
        print(f"gateway SIGKILL x{kills}: {figures}; custody {g.custody.view()['n01']}")
    finally:
        if gw.poll() is None:
            gw.send_signal(signal.SIGKILL)
            gw.wait()
        gw_log.close()
        await g.stop()
        acct.stop()
        os.close(m)


def _hk_field(url: str, name: str) -> int:
    """A field of the newest archived HK packet of n01."""
    import struct

    from wire.defs import APID_HK

    pd = load().packet(APID_HK)
    i = [f.name for f in pd.fields].index(name)
    with open_archive(url) as a:
        last = max(a.raw_packets(node="n01", apid=APID_HK, limit=1_000_000), key=lambda p: p.ticks)
    return int(struct.unpack_from(pd.payload_format, last.data, 12)[i])


@pytest.mark.slow
async def test_outage_longer_than_the_journal_drops_counted_and_custody_goes_on(broker, make_node,
                                                                                tmp_path: Path) -> None:
    link = await LinkProxy(broker.host, broker.port, delay=0.0, name="n01").start()
    acct = Accounting(broker.host, broker.port, SITE).start()
    url = f"sqlite:///{tmp_path}/archive.db"
    # a 3 KB journal: about 50 packets at these rates fill it in ~12 s
    cfg = node_config(link.port, journal={"custody_s": CUSTODY_S, "segment_bytes": 1024, "segments": 3},
                      rates={"hk_ms": 500, "power_ms": 1000, "thermal_ms": 2000, "radiation_ms": 2000, "seismic_hz": 0})
    cfg["broker"].update(max_msg=512, window=4)
    node = make_node(cfg, "n01")
    g = GroundService(broker.url, _inventory(), url, ops_db=tmp_path / "ops.db", api_port=0, custody_s=0.5,
                      client_id=f"g-{os.getpid()}-{time.monotonic_ns()}", time_sync_s=-1)
    try:
        assert acct.wait_connected()
        await g.start()
        await g.wait_connected()
        node.start()
        await _until(lambda: g.custody.view().get("n01", {}).get("sent", 0) >= 4, 60, "custody acks",
                     lambda: _diag(g, node))
        link.cut()
        await asyncio.sleep(25.0)
        link.restore()
        await _until(lambda: _hk_field(url, "journal_dropped") > 0, 60, "the node's drop count in HK",
                     lambda: _diag(g, node))

        def settled() -> bool:
            v = g.custody.view().get("n01", {})
            return v.get("skipped", 0) > 0 and not v.get("holes")

        # custody moves past the dropped counts long before --custody-give-up (600 s)
        await _until(settled, 60, "custody past the dropped counts", lambda: _diag(g, node))
        await asyncio.sleep(2.0)
        arch = _archived(url)
        assert not [k for k, n in arch.items() if n > 1], "archived twice"
        missing = []
        for apid in {a for a, _ in arch}:
            top = max(s for a, s in arch if a == apid)
            missing += [(apid, s) for s in range(top + 1) if (apid, s) not in arch]
        dropped = _hk_field(url, "journal_dropped")
        v = g.custody.view()["n01"]
        # what the archive lacks is what the node dropped; the node may count more: packets
        # on their way when the link was cut (archived, never confirmed), at most the
        # window of messages in flight
        assert missing and len(missing) == v["skipped"] <= dropped, (len(missing), v, dropped,
                                                                     Counter(a for a, _ in missing))
        smallest = min(p.length for p in load().packets)
        assert dropped - len(missing) <= 4 * (512 // smallest), (dropped, len(missing))
        print(f"outage longer than the journal: node dropped {dropped}, archive lacks {len(missing)} "
              f"(= skipped by custody), custody {v}")
    finally:
        await g.stop()
        acct.stop()
        await link.stop()

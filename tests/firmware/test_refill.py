"""Automatic refill, end to end: the real firmware on the MicroPython VM behind the link
emulator, a real mosquitto, the real ground service (SQLite archive), no operator.

* Messages the link emulator drops (it acknowledges them to the node, so the node forgets
  them while its journal still holds them) become sequence gaps that the ground fills by
  itself with REPLAY commands: every packet the node produced ends in the archive, every
  gap ends "filled".
* Packets the node's journal dropped during an outage longer than it can hold are gaps the
  ground cannot fill: they end "lost", and the packets of the lost gaps are exactly the
  node's own count of journal drops (HK journal_dropped).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from ground.ops import FINAL
from ground.ops.refill import REFILL_USER
from ground.service import GroundService
from sim.link import LinkProxy
from wire import defs
from wire.ccsds import SEQ_MOD
from wire.inventory import Inventory, Node

from firmware_helpers import KEY, SITE, node_config

LIGHT_TIME = 0.3
APIDS = (defs.APID_HK, defs.APID_POWER, defs.APID_THERMAL, defs.APID_RADIATION, defs.APID_SEISMIC, defs.APID_EVENT)


async def _until(pred, timeout: float, what: str, node=None, detail=None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {detail() if detail else ''}\n"
                                 f"{node.log() if node else ''}")
        await asyncio.sleep(0.1)


def _ground(broker, tmp_path) -> GroundService:
    inv = Inventory(SITE, [Node("n01", KEY, "pw", hk_period_s=0.5)])
    # one ingest worker: no reordering between workers to wait out
    return GroundService(broker.url, inv, f"sqlite:///{tmp_path}/archive.db", api_port=0, light_time=LIGHT_TIME,
                         time_sync_s=-1, gap_settle_s=1.0, client_id=f"g-{os.getpid()}-{time.monotonic_ns()}")


def _holes(g: GroundService) -> dict[int, list[int]]:
    """Per APID, the counts missing between the first and the newest archived (mod SEQ_MOD)."""
    out: dict[int, list[int]] = {}
    keys = g.archive.packet_keys(node="n01")
    for apid in APIDS:
        seqs = sorted((t, s) for a, s, t in keys if a == apid)
        miss = []
        for (_t0, s0), (_t1, s1) in zip(seqs, seqs[1:], strict=False):
            miss += [(s0 + k) % SEQ_MOD for k in range(1, (s1 - s0) % SEQ_MOD)]
        out[apid] = miss
    return out


@pytest.mark.slow
async def test_dropped_messages_are_refilled_without_an_operator(broker, make_node, tmp_path) -> None:
    link = await LinkProxy(broker.host, broker.port, delay=LIGHT_TIME, name="n01").start()
    cfg = node_config(link.port, rates={"hk_ms": 250, "power_ms": 500, "thermal_ms": 1000, "radiation_ms": 1000,
                                        "seismic_hz": 0})
    node = make_node(cfg, "n01")
    g = _ground(broker, tmp_path)
    try:
        await g.start()
        await g.wait_connected()
        ops = g.ops
        assert ops is not None
        assert g.archive.gap_settle_s == 1.0
        node.start()
        await _until(lambda: ops.nodes.get("n01").status == "online", 30, "the node's birth", node)
        await _until(lambda: ops.journal_bytes.get("n01") == 8 * 8192, 10, "the journal size in the birth", node)
        await _until(lambda: g.archive.count_raw(node="n01") >= 20, 20, "telemetry", node)
        for burst in (1, 3, 2):  # whole MQTT messages lost after the node got its PUBACK
            link.drop(burst)
            await _until(lambda: link._drop_next == 0, 10, "the drop", node)
            await asyncio.sleep(2.0)
        assert link.stats.dropped == 6
        await _until(lambda: g.archive.gaps(site=SITE, states=("open", "refilling")) == []
                     and len(g.archive.gaps(site=SITE)) >= 1 and not any(_holes(g).values()), 60,
                     "every gap refilled", node, lambda: (g.archive.gaps(site=SITE), _holes(g), ops.refiller.view()))
        gaps = g.archive.gaps(site=SITE)
        assert gaps and all(x["state"] == "filled" and x["missing"] == 0 and x["requests"] >= 1 for x in gaps), gaps
        assert sum(x["count"] for x in gaps) >= 6  # every dropped message held at least one packet
        # every packet the node produced is archived: no count missing from 0 to the newest, per APID
        keys = g.archive.packet_keys(node="n01")
        for apid in APIDS[:4]:
            seqs = {s for a, s, _t in keys if a == apid}
            assert seqs == set(range(max(seqs) + 1)), (apid, sorted(set(range(max(seqs) + 1)) - seqs))
        # no operator: every REPLAY is the refiller's, and the node executed it (the last one
        # may still be on its way back when the gap it asked for is filled)
        await _until(lambda: all(r["stage"] in FINAL for r in ops.commander.list()), 30, "the last REPLAY's ack",
                     node, lambda: [(r["id"], r["stage"]) for r in ops.commander.list()])
        replays = [r for r in ops.commander.list() if r["command"] == "REPLAY"]
        assert replays and all(r["user"] == REFILL_USER and r["stage"] == "EXECUTED" for r in replays), replays
        assert {r["user"] for r in ops.commander.list()} == {REFILL_USER}
        view = ops.gaps_view()
        assert view["refill"]["requests"] == len(replays) and view["refill"]["filled"] >= 1
        link_counters = ops.links()["n01"]
        assert link_counters["gap_states"]["filled"] == len(gaps) and link_counters["missing"] == 0
    finally:
        await g.stop()
        await link.stop()


@pytest.mark.slow
async def test_gap_beyond_the_journal_ends_lost_with_the_nodes_drop_count(broker, make_node, tmp_path) -> None:
    link = await LinkProxy(broker.host, broker.port, delay=LIGHT_TIME, name="n01").start()
    cfg = node_config(link.port, journal={"segment_bytes": 2048, "segments": 3},
                      rates={"hk_ms": 250, "power_ms": 500, "thermal_ms": 1000, "radiation_ms": 1000,
                             "seismic_hz": 100})
    node = make_node(cfg, "n01")
    g = _ground(broker, tmp_path)
    try:
        await g.start()
        await g.wait_connected()
        ops = g.ops
        assert ops is not None
        ops.refiller.backoff_s = 0.5  # three fruitless REPLAYs in a few seconds
        node.start()
        await _until(lambda: g.archive.count_raw(node="n01", apid=defs.APID_HK) >= 8, 30, "telemetry", node)
        broker.stop()  # ~1 KB/s of telemetry against a 6 KB journal: the node drops its oldest packets
        await asyncio.sleep(12)
        broker.start()

        def dropped() -> int:
            v = ops.latest.get("n01", {}).get("HK", {}).get("values", {}).get("journal_dropped")
            return int(v or 0)

        await _until(lambda: dropped() > 0, 30, "the node's drop count", node)
        await _until(lambda: g.archive.gaps(site=SITE, states=("open", "refilling")) == []
                     and g.archive.gaps(site=SITE, states=("lost",)), 90, "the gaps to end lost", node,
                     lambda: (g.archive.gaps(site=SITE), ops.refiller.view(), dropped()))
        lost = g.archive.gaps(site=SITE, states=("lost",))
        holes = _holes(g)
        # exactly the node's own count: what it dropped is what the lost gaps miss, nothing else
        assert sum(x["missing"] for x in lost) == sum(len(h) for h in holes.values()) == dropped(), \
            (lost, holes, dropped(), node.log())
        assert all(x["node_dropped"] is not None and x["node_dropped"] > 0 and x["reason"] for x in lost), lost
        assert g.archive.gaps(site=SITE, states=("filled",)) == []
        assert ops.links()["n01"]["lost"] == dropped()
    finally:
        await g.stop()
        await link.stop()


PG_DSN = os.environ.get("LUNABASE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.mark.slow
@pytest.mark.postgres
async def test_workers_and_broker_restart_lose_nothing_with_refill(broker, make_node, tmp_path) -> None:
    """Scale-out with real nodes: the ground and two `lunabase ingest` workers in one shared
    subscription group into PostgreSQL, two firmware nodes, a broker restart and a worker
    SIGKILL.  What mosquitto drops of the group's deliveries at its restart, the ground asks
    back from the journals: every packet the nodes produced ends archived, every gap filled
    by a REPLAY (no gap without a real loss)."""
    import signal
    import subprocess
    import sys
    import uuid

    from lunabase import ROOT

    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception as e:
        pytest.skip(f"no PostgreSQL at {PG_DSN}: {e}")
    schema = f"lb_fwscale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}options=-csearch_path%3D{schema}"
    key2 = bytes(reversed(KEY))
    inv = Inventory(SITE, [Node("n01", KEY, "pw", hk_period_s=0.5), Node("n02", key2, "pw", hk_period_s=0.5)])
    g = GroundService(broker.url, inv, dsn, api_port=0, light_time=0.0, time_sync_s=-1, share="ingest",
                      ops_db=tmp_path / "ops.db", client_id=f"g-{os.getpid()}-{time.monotonic_ns()}")
    rates = {"hk_ms": 250, "power_ms": 500, "thermal_ms": 1000, "radiation_ms": 1000, "seismic_hz": 0}
    nodes = [make_node(node_config(broker.port, node=n, rates=rates, key=k.hex()), n)
             for n, k in (("n01", KEY), ("n02", key2))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def worker(k: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ground.cli_data", "ingest", "--broker", f"mqtt://{broker.host}:{broker.port}",
             "--archive", dsn, "--share", "ingest", "--client-id", f"fw-ing-{k}"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / f"w{k}.log").open("ab"),
            start_new_session=True)

    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        await g.start()
        await g.wait_connected()
        ops, a = g.ops, g.archive
        assert ops is not None
        procs = {k: worker(k) for k in (1, 2)}
        for nd in nodes:
            nd.start()
        await _until(lambda: all(a.count_raw(node=n) >= 20 for n in ("n01", "n02")), 60, "telemetry", nodes[0])
        await asyncio.to_thread(broker.restart)
        await asyncio.sleep(4)
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(10)
        procs[1] = worker(1)  # its session (the same client id) comes back
        await asyncio.sleep(4)

        def complete() -> bool:
            if a.gaps(site=SITE, states=("open", "refilling", "lost")):
                return False
            return all(_contiguous(n) for n in ("n01", "n02"))

        def _contiguous(n: str) -> bool:
            ks = a.packet_keys(node=n)
            for apid in APIDS[:4]:
                seqs = {s for ap, s, _t in ks if ap == apid}
                if not seqs or seqs != set(range(max(seqs) + 1)):
                    return False
            return True

        await _until(complete, 90, "every packet archived and every gap filled", nodes[0],
                     lambda: (a.gaps(site=SITE), ops.refiller.view(), {k: p.poll() for k, p in procs.items()}))
        gaps = a.gaps(site=SITE)
        # no false gap: each one was really missing until the ground asked for it
        assert all(x["state"] == "filled" and x["requests"] >= 1 for x in gaps), gaps
        replays = [r for r in ops.commander.list() if r["command"] == "REPLAY"]
        assert all(r["user"] == REFILL_USER for r in replays)
        assert len(replays) >= len({(x["node"], x["apid"]) for x in gaps})
        print(f"{len(gaps)} gap(s) from the broker restart, {len(replays)} REPLAY(s);",
              {n: a.count_raw(node=n) for n in ("n01", "n02")}, "packets archived")
        assert all(p.poll() is None for p in procs.values()), "a worker died"
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        await g.stop()
        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

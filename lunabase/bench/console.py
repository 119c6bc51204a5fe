"""`lunabase bench console`: how fast the web console follows the base, and what it costs the browser.

One run starts a private mosquitto on loopback, the real ground (SQLite archive in a temp
folder, light time 0) serving the web console, a publisher process sending, for each of
``--nodes`` nodes, one message a second with HK, POWER, THERMAL, RADIATION and SEISMIC
(100 samples x 3 axes at 100 Hz) packets stamped with the send time, and headless Chromium
(Debian's, driven by selenium) showing the node overview with every node's HK fields
subscribed in batches, as plots and tables do, and every node's seismic stream followed as
the seismic view does (``--no-seismic``: without).

Figures:

* delay: from the ground's archive commit of an HK packet (the moment ingest hands it to
  the operations layer) to the browser's receipt of that packet's values on the full-rate
  stream ``/api/web/live`` (matched by node and time tag; both clocks are this machine's).
  It includes the stream's batching (one message per console every 100 ms), so about 50 ms
  of the median is by design;
* browser CPU: CPU seconds of every Chromium process over the window / window length
  (100 % = one core); the ground's own process CPU beside it;
* resyncs: times the ground dropped this browser's backlog (it fell behind).

The machine is shared and the figures are noisy: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wire.timetag import ticks_to_unix

CLK_TCK = os.sysconf("SC_CLK_TCK")
SITE = "bench"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="web console: ground commit -> browser receipt delay (p50/p99) and browser CPU with N nodes streaming",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=50, help="nodes streaming 4 packets/s each, plus 100 Hz seismic (default 50)")
    p.add_argument("--seconds", type=float, default=30.0, help="measurement window (default 30 s)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before the window opens (default 5)")
    p.add_argument("--no-seismic", dest="seismic", action="store_false",
                   help="without each node's 100 Hz x 3-axis seismic stream (on by default, followed by the browser)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(func=run)


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _publisher(host: str, port: int, nodes: list[str], seconds: float, stop: Any, seismic: bool = True) -> None:
    """Each node: one message a second with HK, POWER, THERMAL, RADIATION and (``seismic``) a
    SEISMIC batch of 100 samples x 3 axes at 100 Hz (time tag = now)."""
    import math

    import numpy as np
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ground.testing import make_packet
    from wire import ccsds, topics

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-console-pub-{os.getpid()}")
    c.connect(host, port)
    c.loop_start()
    k = 0
    t_next = time.monotonic()
    seqs = dict.fromkeys(nodes, 0)
    i_s = np.arange(100)
    wave = np.stack([30 * np.sin(i_s / 5), 20 * np.cos(i_s / 7), 5 * np.sin(i_s / 3)], axis=1)
    while not stop.is_set():
        k += 1
        for i, n in enumerate(nodes):
            now = time.time()
            s = seqs[n] = (seqs[n] + 1) % ccsds.SEQ_MOD
            payload = b"".join((
                make_packet("HK", seq=s, t=now, node=n, uptime=k, boot_count=1, mode="DAY", free_heap=60000,
                            loop_lag=10, link_state="UP", cpu_temp=30 + math.sin(k / 5 + i), hk_period=1),
                make_packet("POWER", seq=s, t=now, node=n, battery_voltage=3.9, battery_soc=80 + math.sin(k / 9),
                            battery_temp=15, solar_voltage=5.0, load_power=1.0),
                make_packet("THERMAL", seq=s, t=now, node=n, surface_temp=-20, electronics_temp=20, radiator_temp=-5,
                            sensor_head_temp=10, enclosure_temp=15),
                make_packet("RADIATION", seq=s, t=now, node=n, dose_rate=57, counts=1000 + k, interval=1000,
                            total_dose=100),
                make_packet("SEISMIC", seq=s, t=now, node=n, rate=100, samples=wave) if seismic else b"",
            ))
            c.publish(topics.topic(SITE, n, topics.TM), payload, qos=1)
        t_next += 1.0
        time.sleep(max(0.0, t_next - time.monotonic()))
    c.loop_stop()
    c.disconnect()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from ground.service import GroundService
    from ground.web import openmct_dist
    from sim.mosquitto import Mosquitto
    from wire.inventory import Inventory

    if openmct_dist() is None:
        raise SystemExit("Open MCT is not installed: run scripts/setup.sh (npm ci in ground/web)")
    for exe in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(exe).exists():
            raise SystemExit(f"{exe} is missing: apt-get install chromium chromium-driver (scripts/setup.sh does as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    names = [f"n{i:02d}" for i in range(1, args.nodes + 1)]
    commits: dict[tuple[str, int], float] = {}
    with Mosquitto() as broker:
        inv = Inventory.generate(SITE, names)
        g = GroundService(f"mqtt://{broker.host}:{broker.port}", inv, archive=f"sqlite:///{work}/archive.db",
                          ops_db=work / "ops.db", api_port=0, light_time=0.0)
        import secrets

        pw = secrets.token_urlsafe(12)
        g.users.add("bench", pw, ["viewer"], by="lunabase-bench")  # the browser logs in like any client
        await g.start()
        await g.wait_connected(30)
        ops: Any = g.ops
        inner = ops.on_packets

        def on_packets(site: str, node: str, result: Any, fresh: Any, received: float, payload: Any = None) -> None:
            t = time.time()  # ingest calls the sink right after the archive commit
            inner(site, node, result, fresh, received, payload)
            hk = result.tables.get(1)
            if hk is not None and len(hk):
                ms = ticks_to_unix(result.ticks[hk.rows].astype("int64")) * 1000.0  # as the stream sends them
                for x in ms.tolist():
                    commits.setdefault((node, round(x, 1)), t)

        ops.on_packets = on_packets
        stop = mp.Event()
        pub = mp.Process(target=_publisher, args=(broker.host, broker.port, names, args.seconds, stop, args.seismic),
                         daemon=True)
        pub.start()
        profile = tempfile.mkdtemp(prefix="lb-bench-chromium-", dir=work)
        o = webdriver.ChromeOptions()
        o.binary_location = "/usr/bin/chromium"
        for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,900",
                  f"--user-data-dir={profile}"):
            o.add_argument(a)
        d = await asyncio.to_thread(webdriver.Chrome, service=Service("/usr/bin/chromedriver"), options=o)
        try:
            assert g.api is not None
            url = g.api.url
            await asyncio.to_thread(d.get, f"{url}/api/auth/me")  # the ground's origin, then its login route
            status = await asyncio.to_thread(d.execute_async_script, """
                const done = arguments[arguments.length - 1];
                fetch('/api/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                      body: JSON.stringify({username: 'bench', password: arguments[0]})})
                  .then(r => done(r.status), e => done(String(e)));""", pw)
            if status != 200:
                raise SystemExit(f"the bench's browser could not log in: {status}")
            await asyncio.to_thread(d.get, f"{url}/console/")
            deadline = time.monotonic() + 30
            while not await asyncio.to_thread(
                    d.execute_script, "return window.lunabaseGround && window.lunabaseGround.state === 'connected'"):
                if time.monotonic() > deadline:
                    raise SystemExit("the console did not connect to the ground within 30 s")
                await asyncio.sleep(0.2)
            # every node's HK fields subscribed in batches, as open plots and tables would be
            subscribed = await asyncio.to_thread(d.execute_async_script, """
                const done = arguments[arguments.length - 1];
                const [nodes, fields] = [arguments[0], arguments[1]];
                (async () => {
                  let n = 0;
                  window.__benchSamples = 0;
                  window.__benchSeismic = 0;
                  for (const node of nodes) {
                    if (arguments[2]) { // the seismic view's stream: every sample, 100 Hz x 3 axes
                      window.lunabaseGround.subscribeSeismic(node, (b) => {
                        for (const p of b) window.__benchSeismic += p.x.length;
                      });
                    }
                    for (const f of fields) {
                      const o = await window.openmct.objects.get(`lunabase:tlm.${node}.HK.${f}`);
                      window.openmct.telemetry.subscribe(o, (b) => { window.__benchSamples += b.length; },
                                                         {strategy: 'batch'});
                      n += 1;
                    }
                  }
                  window.lunabaseGround.trace = [];
                  done(n);
                })();""", names, ["uptime", "free_heap", "loop_lag", "cpu_temp"], args.seismic)
            await asyncio.sleep(args.warmup)
            browser_pids = _tree(d.service.process.pid)
            c0 = sum(_cpu(p) for p in browser_pids)
            g0 = _cpu(os.getpid())
            t0 = time.monotonic()
            await asyncio.to_thread(d.execute_script, "window.lunabaseGround.trace = []; window.__benchSamples = 0;"
                                    " window.__benchSeismic = 0;")
            await asyncio.sleep(args.seconds)
            wall = time.monotonic() - t0
            browser_pids = _tree(d.service.process.pid)
            cpu_browser = sum(_cpu(p) for p in browser_pids) - c0
            cpu_ground = _cpu(os.getpid()) - g0  # this process: ground + the bench's own loop
            trace = await asyncio.to_thread(d.execute_script, "return window.lunabaseGround.trace")
            state = await asyncio.to_thread(d.execute_script, """const g = window.lunabaseGround;
                return {resyncs: g.resyncs, dropped: g.dropped, samples: window.__benchSamples, received: g.received,
                        seismic: window.__benchSeismic}""")
        finally:
            stop.set()
            await asyncio.to_thread(d.quit)
            pub.join(10)
            await g.stop()
    first: dict[tuple[str, int], float] = {}
    for node, pname, tag_ms, t_ms in trace:
        if pname == "HK" and tag_ms is not None:
            first.setdefault((node, round(tag_ms, 1)), t_ms / 1000.0)
    delays = [(t - commits[k]) * 1000.0 for k, t in first.items() if k in commits]
    return {
        "nodes": args.nodes, "packets_per_s": (5 if args.seismic else 4) * args.nodes, "window_s": round(wall, 1),
        "subscriptions": subscribed, "hk_matched": len(delays),
        "hk_expected": int(args.nodes * args.seconds),
        "delay_ms": {"p50": round(_pct(delays, 0.50), 1), "p99": round(_pct(delays, 0.99), 1),
                     "max": round(max(delays), 1) if delays else None,
                     "mean": round(statistics.fmean(delays), 1) if delays else None},
        "browser_cpu_pct": round(100.0 * cpu_browser / wall, 1),
        "ground_cpu_pct": round(100.0 * cpu_ground / wall, 1),
        "live_samples_delivered": state["samples"], "resyncs": state["resyncs"], "dropped": state["dropped"],
        "seismic_samples_per_s": round(state["seismic"] / wall, 1) if args.seismic else None,
        "seismic_expected_per_s": 100 * args.nodes if args.seismic else None,
        "chromium_processes": len(browser_pids),
    }


def run(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.seconds <= 0:
        print("--nodes must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lb-bench-console-") as tmp:
        res = asyncio.run(_measure(args, Path(tmp)))
    if args.json:
        print(json.dumps(res))
        return 0
    d = res["delay_ms"]
    print(f"web console, {res['nodes']} nodes streaming ({res['packets_per_s']} packets/s), "
          f"{res['subscriptions']} parameters subscribed in batches, {res['window_s']} s window")
    print(f"  ground commit -> browser receipt (HK, {res['hk_matched']} of ~{res['hk_expected']} matched): "
          f"p50 {d['p50']} ms, p99 {d['p99']} ms, max {d['max']} ms (includes the stream's 100 ms batching)")
    print(f"  browser CPU {res['browser_cpu_pct']} % of one core ({res['chromium_processes']} Chromium processes); "
          f"ground process {res['ground_cpu_pct']} %")
    if res["seismic_samples_per_s"] is not None:
        print(f"  seismic on the full-rate stream: {res['seismic_samples_per_s']} samples/s per axis received "
              f"(sent {res['seismic_expected_per_s']}: 100 Hz x 3 axes x {res['nodes']} nodes)")
    print(f"  live samples handed to Open MCT: {res['live_samples_delivered']}; "
          f"resyncs {res['resyncs']} (dropped {res['dropped']})")
    print("  (shared machine: noisy; compare runs made one after the other)")
    print(json.dumps(res))
    return 0

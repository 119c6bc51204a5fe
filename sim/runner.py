"""Scenarios and the running simulated base.

    scenario = Scenario.load("demo")                  # a name in sim/scenarios/ or a path
    async with SimBase(scenario) as base:             # broker, sensor bus, links, nodes
        await base.run()                              # until duration_s (forever if 0)
        print(base.report())

``SimBase`` starts (unless given a broker URL) a private mosquitto, the sensor bus, one
link proxy per node, the nodes (real MicroPython VMs), the environment stepping loop,
the fault timeline and its own subscriber that accounts for every packet.  Scenario
format: docs/sim.md.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.accounting import Accounting
from sim.environment import (
    DEFAULT_START,
    Environment,
    Quake,
    SolarParticleEvent,
    Station,
    StationConfig,
    site_from,
)
from sim.environment.site import Site
from sim.faults import Fault, Faults
from sim.link import LIGHT_TIME_S, LinkProxy, LinkStats, Visibility
from sim.node import VirtualNode, build_firmware
from sim.sensorbus import SensorBus, node_time
from wire.brokerurl import BrokerUrl
from wire.inventory import Inventory, Node

log = logging.getLogger("sim.runner")

SCENARIOS = Path(__file__).with_name("scenarios")
MAX_QUAKES = 4  # active quakes sent to a node (the strongest now)
QUAKE_REPORT_M = 2.5  # smaller (frequent deep) quakes are logged at debug level only
_STATION_KEYS = {
    "battery_wh",
    "soc",
    "panel_area_m2",
    "panel_efficiency",
    "panel_tilt_deg",
    "loads",
    "default_load_w",
    "heater_w",
    "rhu_w",
}


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the file and the field."""


@dataclass
class NodeSpec:
    """One node of a scenario: its id, its model hardware and its firmware config overrides."""

    id: str
    station: dict[str, Any] = field(default_factory=dict)
    firmware: dict[str, Any] = field(default_factory=dict)
    start: bool = True


@dataclass
class Scenario:
    """A parsed scenario file (see docs/sim.md for every field)."""

    name: str
    description: str = ""
    seed: int = 0
    site: Site = field(default_factory=lambda: site_from("equator"))
    site_id: str = "moonbase"
    local_time_h: float = 8.0
    start: float = DEFAULT_START
    duration_s: float = 60.0  # real seconds; 0 = until stopped
    acceleration: float = 1.0  # simulated seconds per real second
    step_s: float = 1.0  # real seconds between environment steps
    progress_s: float = 5.0
    heap: str = "128K"  # docs/firmware.md: a node with the sensor-bus client needs 128 KB on the 64-bit unix port
    link_delay_s: float = LIGHT_TIME_S
    link_jitter_s: float = 0.0
    link_bandwidth: float | None = None  # bytes/s
    link_direct: bool = False  # no link emulator: nodes connect to the broker (no light time, no link faults)
    visibility: Visibility | None = None
    spe: list[dict[str, Any]] = field(default_factory=list)  # at_h = sim hours after start
    quakes: list[dict[str, Any]] = field(default_factory=list)
    spe_per_year: float = 4.0
    deep_per_day: float = 2.4
    shallow_per_year: float = 5.6
    nodes: list[NodeSpec] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    path: Path | None = None

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A shipped scenario by name (``demo``) or a TOML file by path."""
        p = Path(name_or_path)
        if not p.exists():
            cand = SCENARIOS / (str(name_or_path) + ("" if str(name_or_path).endswith(".toml") else ".toml"))
            if not cand.exists():
                raise ScenarioError(f"no scenario {name_or_path!r}: shipped ones are {', '.join(list_scenarios())}")
            p = cand
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(f"{p}: {e}") from None
        sc = cls.from_dict(raw, default_name=p.stem, where=str(p))
        sc.path = p
        return sc

    @classmethod
    def from_dict(cls, raw: dict[str, Any], default_name: str = "scenario", where: str = "scenario") -> Scenario:
        raw = copy.deepcopy(raw)
        try:
            site_raw = raw.get("site", "equator")
            if isinstance(site_raw, dict):
                site_raw = dict(site_raw)
                local = float(site_raw.pop("local_time_h", 8.0))
                site_id = str(site_raw.pop("id", "moonbase"))
                site = site_from(site_raw if ("lat_deg" in site_raw or len(site_raw) > 1) else site_raw.get("preset", "equator"))
            else:
                local, site_id, site = 8.0, "moonbase", site_from(site_raw)
            link = raw.get("link", {})
            direct = link.get("direct", False)
            if not isinstance(direct, bool):
                raise ScenarioError(f"{where}: link.direct must be true or false, got {direct!r}")
            if direct:
                emulated = sorted(k for k in ("delay_s", "jitter_s", "bandwidth_bps", "window", "outages")
                                  if link.get(k))
                if emulated:
                    raise ScenarioError(f"{where}: link.direct = true has no link emulator, so no {', '.join(emulated)}")
            vis = None
            if "window" in link or "outages" in link:
                w = link.get("window", {})
                vis = Visibility(
                    period=w.get("period_s"),
                    visible=w.get("visible_s"),
                    outages=[(float(o["at_s"]), float(o["duration_s"])) for o in link.get("outages", [])],
                )
            env = raw.get("environment", {})
            defaults = raw.get("defaults", {})
            nodes: list[NodeSpec] = []
            for i, n in enumerate(raw.get("node", [])):
                merged = _merge(copy.deepcopy(defaults), n)
                count = int(merged.pop("count", 1))
                nid = merged.pop("id", None)
                if nid is None:
                    raise ScenarioError(f"{where}: node[{i}] needs an id")
                fw = merged.pop("firmware", {})
                start = bool(merged.pop("start", True))
                unknown = set(merged) - _STATION_KEYS
                if unknown:
                    raise ScenarioError(f"{where}: node {nid}: unknown field(s) {sorted(unknown)}")
                ids = [nid] if count == 1 else [f"{nid}{k:03d}" for k in range(1, count + 1)]
                nodes += [NodeSpec(x, dict(merged), copy.deepcopy(fw), start) for x in ids]
            faults = [Fault.from_toml(f, f"{where}: fault[{i}]") for i, f in enumerate(raw.get("fault", []))]
            if direct:
                linkish = sorted({f.kind for f in faults} & {"link_cut", "link_restore", "corrupt"})
                if linkish:
                    raise ScenarioError(f"{where}: link.direct = true has no link emulator for {', '.join(linkish)}")
            sc = cls(
                name=raw.get("name", default_name),
                description=raw.get("description", ""),
                seed=int(raw.get("seed", 0)),
                site=site,
                site_id=site_id,
                local_time_h=local,
                start=float(raw.get("start", DEFAULT_START)),
                duration_s=float(raw.get("duration_s", 60.0)),
                acceleration=float(raw.get("acceleration", 1.0)),
                step_s=float(raw.get("step_s", 1.0)),
                progress_s=float(raw.get("progress_s", 5.0)),
                heap=str(raw.get("heap", "128K")),
                link_delay_s=0.0 if direct else float(link.get("delay_s", LIGHT_TIME_S)),
                link_direct=direct,
                link_jitter_s=float(link.get("jitter_s", 0.0)),
                link_bandwidth=float(link["bandwidth_bps"]) if link.get("bandwidth_bps") else None,
                visibility=vis,
                spe=list(env.get("spe", [])),
                quakes=list(env.get("quake", [])),
                spe_per_year=float(env.get("spe_per_year", 4.0)),
                deep_per_day=float(env.get("deep_per_day", 2.4)),
                shallow_per_year=float(env.get("shallow_per_year", 5.6)),
                nodes=nodes,
                faults=faults,
            )
        except ScenarioError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ScenarioError(f"{where}: {type(e).__name__}: {e}") from None
        if not sc.nodes:
            raise ScenarioError(f"{where}: no [[node]]")
        ids = [n.id for n in sc.nodes]
        if len(set(ids)) != len(ids):
            raise ScenarioError(f"{where}: node ids appear twice")
        return sc

    def environment(self) -> Environment:
        return Environment(
            self.site,
            seed=self.seed,
            start=self.start,
            local_time_h=self.local_time_h,
            spe=[
                SolarParticleEvent(
                    self.start + float(e["at_h"]) * 3600,
                    float(e.get("peak_factor", 1000)),
                    float(e.get("rise_h", 2)),
                    float(e.get("decay_h", 12)),
                )
                for e in self.spe
            ],
            quakes=[
                Quake(
                    self.start + float(q["at_h"]) * 3600,
                    float(q.get("magnitude", 4.0)),
                    str(q.get("kind", "shallow")),
                    float(q.get("freq_hz", 4.0)),
                    float(q.get("decay_s", 900.0)),
                )
                for q in self.quakes
            ],
            spe_per_year=self.spe_per_year,
            deep_per_day=self.deep_per_day,
            shallow_per_year=self.shallow_per_year,
        )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = _merge(base[k], v)
        else:
            base[k] = v
    return base


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.toml"))


def _station_config(spec: NodeSpec) -> StationConfig:
    s = dict(spec.station)
    if "loads" in s:
        s["loads"] = {str(k).upper(): float(v) for k, v in s["loads"].items()}
    return StationConfig(**s)


def parse_broker_url(url: str) -> tuple[str, int]:
    """(host, port) of a broker URL (mqtt:// or mqtts://; with TLS the link emulator relays
    the encrypted bytes and cannot corrupt single MQTT payloads)."""
    b = BrokerUrl.parse(url, schemes=("mqtt", "mqtts"))
    return b.host, b.port


class SimBase:
    """A running simulated lunar base (async context manager).

    ``broker_url``: use that broker instead of starting a private mosquitto.
    ``inventory``: node keys/passwords (else loaded from / saved to ``inventory_path``,
    else generated).  ``progress``: called with each progress line (None: silent).
    """

    def __init__(
        self,
        scenario: Scenario,
        broker_url: str | None = None,
        workdir: str | Path | None = None,
        inventory: Inventory | None = None,
        inventory_path: str | Path | None = None,
        progress: Callable[[str], None] | None = None,
        broker_user: str = "",
        broker_password: str = "",
        ca: str | Path | None = None,
        custody_s: float = 0.0,
    ) -> None:
        """``ca``: with an mqtts:// ``broker_url``, the CA (PEM) that signed the broker's
        certificate: every node verifies the broker with it (uploaded as ca.der), and so
        does the delivery observer.

        ``custody_s``: > 0 when a ground that sends custody acknowledgements (``lunabase
        ground``, its default) ingests from the broker: every node's ``journal.custody_s``
        (docs/custody.md) unless the scenario's firmware overrides set it.  0 (the default):
        custody off, as a node without such a ground needs (it would keep and re-send all)."""
        if custody_s < 0:
            raise ValueError(f"custody_s must be >= 0, got {custody_s}")
        self.custody_s = custody_s
        self.scenario = scenario
        self.tls = bool(broker_url) and BrokerUrl.parse(broker_url or "", schemes=("mqtt", "mqtts")).tls
        if self.tls and not ca:
            raise ValueError(f"{broker_url}: an mqtts broker needs ca= (the CA that signed its certificate)")
        self.ca = Path(ca) if ca else None
        #: MicroPython heap per node: the scenario's (default 128K) unless LUNABASE_NODE_HEAP says otherwise
        self.heap = os.environ.get("LUNABASE_NODE_HEAP") or scenario.heap
        self.broker_url = broker_url
        tmp = None if workdir else tempfile.TemporaryDirectory(prefix="lunabase-sim-")
        self._tmp = tmp
        self.dir = Path(workdir) if workdir else Path(tmp.name if tmp else ".")
        self.inventory = inventory
        self.inventory_path = Path(inventory_path) if inventory_path else None
        self.progress = progress
        self.broker_user, self.broker_password = broker_user, broker_password
        self.broker: Any = None  # sim.mosquitto.Mosquitto when private
        self.broker_host, self.broker_port = "127.0.0.1", 0
        self.bus = SensorBus(on_report=self._on_report)
        self.env = scenario.environment()
        self.stations: dict[str, Station] = {}
        self.nodes: dict[str, VirtualNode] = {}
        self.links: dict[str, LinkProxy] = {}
        self.accounting: Accounting | None = None
        self.faults = Faults(self)
        self.events: list[str] = []
        self.quake_log: list[tuple[float, Quake]] = []  # (real s since start, quake)
        self._quakes: dict[str, list[list[float]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._t0 = time.monotonic()
        self._sim_t0 = scenario.start
        self.steps = 0
        self.started = False
        self._battery_off: set[str] = set()  # nodes off because their battery is empty

    # -- time ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Real seconds since the base started."""
        return time.monotonic() - self._t0

    def sim_time(self) -> float:
        return self._sim_t0 + self.scenario.acceleration * self.elapsed()

    def emit(self, line: str) -> None:
        self.events.append(line)
        if self.progress:
            self.progress(f"[{self.elapsed():7.1f}s] {line}")

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> SimBase:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _inventory(self) -> Inventory:
        ids = [n.id for n in self.scenario.nodes]
        inv = self.inventory
        if inv is None and self.inventory_path and self.inventory_path.exists():
            inv = Inventory.load(self.inventory_path)
        if inv is None:
            inv = Inventory.generate(self.scenario.site_id, ids)
        known = {n.id for n in inv.nodes}
        fresh = Inventory.generate(inv.site, [i for i in ids if i not in known])
        if fresh.nodes:
            inv.nodes += fresh.nodes
        if self.inventory_path:
            inv.save(self.inventory_path)
        return inv

    async def start(self) -> None:
        sc = self.scenario
        self.inventory = self._inventory()
        image = await asyncio.to_thread(build_firmware)
        if self.broker_url:
            self.broker_host, self.broker_port = parse_broker_url(self.broker_url)
        else:
            from sim.mosquitto import Mosquitto

            self.broker = Mosquitto(workdir=self.dir / "broker")
            await asyncio.to_thread(self.broker.start)
            self.broker_host, self.broker_port = self.broker.host, self.broker.port
        # its own ground client account: the broker ties client ids to accounts, so sharing
        # the ground's would make the two connections take turns kicking each other off
        acct = self.inventory.ground_account("sim") if self.broker_url else ("", "")
        user = self.broker_user or acct[0]
        password = self.broker_password or acct[1]
        self.accounting = Accounting(self.broker_host, self.broker_port, self.inventory.site, user, password)
        ca_der = None
        if self.tls and self.ca is not None:
            import ssl

            self.accounting.tls = ssl.create_default_context(cafile=str(self.ca))
            ca_der = ssl.PEM_cert_to_DER_cert(self.ca.read_text())
        self.accounting.start()
        await self.bus.start()
        for spec in sc.nodes:
            inv_node = self.inventory.node(spec.id)
            if sc.link_direct:
                # nothing to emulate: no proxy copying every byte in this process (a third of
                # its CPU per node) and one TCP connection per node instead of two
                host, port = self.broker_host, self.broker_port
            else:
                link = LinkProxy(
                    self.broker_host,
                    self.broker_port,
                    delay=sc.link_delay_s,
                    jitter=sc.link_jitter_s,
                    bandwidth=sc.link_bandwidth,
                    seed=sc.seed,
                    name=spec.id,
                    mqtt=not self.tls,  # TLS: the bytes are opaque to the emulator
                )
                await link.start()
                self.links[spec.id] = link
                host, port = "127.0.0.1", link.port
            self.stations[spec.id] = Station(self.env, _station_config(spec), spec.id)
            node = VirtualNode(
                spec.id, self.dir / "nodes" / spec.id, self.node_config(spec, inv_node, port, host), image, self.heap
            )
            # a data dir from an earlier run (kept work dir): the node's sequence counts
            # continue from there, so "produced" counts from the first one seen this run
            if (node.dir / "data").exists():
                self.accounting.node(spec.id).fresh = False
            node.write_config()  # always: ports change from run to run
            if ca_der is not None:
                (node.dir / "ca.der").write_bytes(ca_der)
            self.nodes[spec.id] = node
        await asyncio.to_thread(self.accounting.wait_connected, 10)
        self._t0 = time.monotonic()
        self.started = True
        self._step(initial=True)
        for spec in sc.nodes:
            if spec.start:
                self.nodes[spec.id].start()
        self._tasks.append(asyncio.create_task(self._step_loop()))
        if sc.faults:
            self._tasks.append(asyncio.create_task(self.faults.run_timeline(sc.faults)))
        if sc.visibility:
            for link in self.links.values():
                self._tasks.append(asyncio.create_task(sc.visibility.drive(link, self._t0)))
        if self.progress and sc.progress_s > 0:
            self._tasks.append(asyncio.create_task(self._progress_loop()))
        self.emit(
            f"started {len(self.nodes)} node(s) at site {self.inventory.site} ({sc.site.name}); broker "
            f"{self.broker_host}:{self.broker_port}; sensor bus :{self.bus.port}; light time {sc.link_delay_s:g} s; "
            f"acceleration ×{sc.acceleration:g}; work dir {self.dir}"
        )

    def node_config(self, spec: NodeSpec, inv: Node, proxy_port: int, host: str = "127.0.0.1") -> dict[str, Any]:
        """config.json of a node: identity and key from the inventory, broker = its link proxy
        (or the broker itself with ``link.direct``)."""
        assert self.inventory is not None, "node_config() needs the inventory (set by start())"
        cfg: dict[str, Any] = {
            "node": spec.id,
            "site": self.inventory.site,
            "board": "sim",
            "key": inv.key.hex(),
            "broker": {"host": host, "port": proxy_port, "user": spec.id, "password": inv.password},
            "sim": {"host": "127.0.0.1", "port": self.bus.port},
        }
        if self.tls:  # the node verifies the broker (behind its link proxy: 127.0.0.1 is in the certificate)
            cfg["broker"].update(tls=True, ca="ca.der")
        if self.custody_s > 0:  # the firmware takes whole seconds
            cfg["journal"] = {"custody_s": max(1, round(self.custody_s))}
        return _merge(cfg, copy.deepcopy(spec.firmware))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.faults.close()
        for n in self.nodes.values():
            n.close()
        for link in self.links.values():
            await link.stop()
        await self.bus.stop()
        if self.accounting:
            # give in-flight messages a moment, then stop
            self.accounting.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.close)
            self.broker = None
        self.started = False

    def cleanup(self) -> None:
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    async def run(self, duration_s: float | None = None) -> dict[str, dict[str, Any]]:
        """Run for ``duration_s`` real seconds (default: the scenario's; 0 = until cancelled)."""
        d = self.scenario.duration_s if duration_s is None else duration_s
        if d and d > 0:
            await asyncio.sleep(max(0.0, d - self.elapsed()))
        else:
            await asyncio.Event().wait()
        return self.report()

    # -- environment stepping ---------------------------------------------------------------------
    def _on_report(self, node: str, msg: dict[str, Any]) -> None:
        st = self.stations.get(node)
        if st is None:
            return
        if "mode" in msg or "load_w" in msg or "heater" in msg:
            st.report(msg.get("mode"), msg.get("load_w"), msg.get("heater"))

    async def _step_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scenario.step_s)
            try:
                self._step()
            except Exception:
                log.exception("environment step failed")

    def _step(self, initial: bool = False) -> None:
        substeps, quakes = self.env.advance(self.sim_time()) if not initial else ([], [])
        now_node = node_time()
        for q in quakes:
            text = f"moonquake M{q.magnitude:.1f} ({q.kind}, {q.freq_hz:.1f} Hz, τ {q.decay_s:.0f} s)"
            self.quake_log.append((self.elapsed(), q))
            if q.magnitude >= QUAKE_REPORT_M:
                self.emit(text)
            else:
                log.debug(text)
        payloads: dict[str, dict[str, Any]] = {}
        for nid, st in self.stations.items():
            st.step(substeps)
            node = self.nodes[nid]
            if st.battery.browned_out and node.powered and node.wanted:
                node.brownout()
                self._battery_off.add(nid)
                self.emit(f"{nid}: battery empty, node browned out (SOC 0 %)")
            elif nid in self._battery_off and not st.battery.browned_out:
                self._battery_off.discard(nid)
                node.power_on()
                self.emit(f"{nid}: battery recharged to {st.battery.soc:.1f} %, node powered on")
            else:
                what = node.supervise()
                if what:
                    self.emit(f"{nid}: {what}")
            active = self._quakes.setdefault(nid, [])
            for q in quakes:
                active.append([round(now_node, 3), round(q.amplitude * st.rng.uniform(0.8, 1.2), 4), round(q.freq_hz, 3), round(q.decay_s, 1)])
            active[:] = [q for q in active if now_node - q[0] < 5 * q[3]]
            active.sort(key=lambda q: -q[1] * math.exp(-(now_node - q[0]) / q[3]))
            del active[MAX_QUAKES:]
            payloads[nid] = {
                "sensors": st.sensors(),
                "seismic": {"noise": 0.05, "quakes": active},
                "sim_time": round(self.env.t, 1),
            }
        self.bus.broadcast(payloads)
        self.steps += 1

    # -- reporting ----------------------------------------------------------------------------------
    def status_line(self) -> str:
        c = self.env.now
        day = (self.env.t - self.scenario.start) / 86400
        parts = [
            f"[{self.elapsed():7.1f}s] sim +{day:6.2f} d LT {c.sun.local_time_h:05.2f} h sun {c.sun.elevation_deg:+6.2f}° "
            f"T {c.surface_c:+6.1f} °C dose {c.dose_rate:8.1f} µGy/h"
        ]
        acct = self.accounting.report() if self.accounting else {}
        if len(self.nodes) <= 6:
            for nid, st in self.stations.items():
                a = acct.get(nid, {})
                mode = self.bus.peers[nid].mode if nid in self.bus.peers else None
                state = "OFF" if not self.nodes[nid].powered else (mode or "boot")
                parts.append(f"{nid} {state} {st.battery.soc:5.1f}% {a.get('delivered', 0)}/{a.get('produced', 0)}")
        else:
            modes: dict[str, int] = {}
            for nid in self.nodes:
                mode = self.bus.peers[nid].mode if nid in self.bus.peers else None
                m = "OFF" if not self.nodes[nid].powered else (mode or "boot")
                modes[m] = modes.get(m, 0) + 1
            soc = sum(s.battery.soc for s in self.stations.values()) / len(self.stations)
            dl = sum(a.get("delivered", 0) for a in acct.values())
            pr = sum(a.get("produced", 0) for a in acct.values())
            parts.append(f"{len(self.nodes)} nodes {modes} mean SOC {soc:.1f}% packets {dl}/{pr}")
        return " | ".join(parts)

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scenario.progress_s)
            if self.progress:
                self.progress(self.status_line())

    def report(self) -> dict[str, dict[str, Any]]:
        """Per node: produced, delivered, lost, duplicated, dropped_oldest, pending, mode, ..."""
        acct = self.accounting.report() if self.accounting else {}
        out: dict[str, dict[str, Any]] = {}
        for nid, node in self.nodes.items():
            r = dict(acct.get(nid, {}))
            st = self.stations[nid]
            link = self.links[nid].stats if nid in self.links else LinkStats()
            r.update(
                soc=round(st.battery.soc, 2),
                starts=node.stats.starts,
                brownouts=node.stats.brownouts,
                resets=node.stats.resets,
                crashes=node.stats.crashes,
                link_cuts=link.cuts,
                corrupted=link.corrupted,
            )
            out[nid] = r
        return out


def format_report(rep: dict[str, dict[str, Any]]) -> str:
    """The per-node table; with an ``archived`` column (packets the ground's archive holds,
    lunabase demo) the last line says what share of the produced packets reached it."""
    cols: tuple[str, ...] = ("produced", "delivered", "missing", "lost", "duplicated", "dropped_oldest", "pending",
                             "mode", "soc", "brownouts", "corrupted")
    archived = any("archived" in r for r in rep.values())
    if archived:
        cols = ("produced", "delivered", "archived", *cols[2:])
    lines = ["node      " + " ".join(f"{c:>14}" for c in cols)]
    for nid, r in rep.items():
        lines.append(f"{nid:<10}" + " ".join(f"{str(r.get(c, '-')):>14}" for c in cols))
    if archived:
        produced = sum(int(r.get("produced", 0)) for r in rep.values())
        got = sum(int(r.get("archived", 0)) for r in rep.values())
        share = f"{100.0 * got / produced:.2f} %" if produced else "-"
        lines.append(f"archived {got} of {produced} packets produced ({share}); "
                     f"{sum(int(r.get('delivered', 0)) for r in rep.values()) - got} seen on the broker but not archived")
    return "\n".join(lines)


async def run_scenario(
    scenario: Scenario | str | Path,
    broker_url: str | None = None,
    duration_s: float | None = None,
    progress: Callable[[str], None] | None = print,
    inventory_path: str | Path | None = None,
    workdir: str | Path | None = None,
    custody_s: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Run a scenario to its end and return the per-node report (``custody_s``: see SimBase)."""
    sc = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
    base = SimBase(sc, broker_url=broker_url, progress=progress, inventory_path=inventory_path, workdir=workdir,
                   custody_s=custody_s)
    try:
        async with base:
            await base.run(duration_s)
            await asyncio.sleep(min(3.0, 2 * sc.link_delay_s + 0.5))  # let in-flight packets land
            return base.report()
    finally:
        base.cleanup()

"""The operations layer in one object: the sink ingest calls, and the state the API serves.

``Operations`` receives what ingest committed (``on_packets``, ``on_status``,
``on_rejected``), runs limits/alarms, liveness and command verification, keeps the latest
values, raw packets, seismic waveform and link counters per node, and publishes live
messages on its ``hub`` (parameters decimated to ``param_hz`` per node).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ground import health as _health
from ground.archive import TimeCorrection
from ground.ingest import LinkStats
from ground.ops.alarms import AlarmManager
from ground.ops.commander import Commander
from ground.ops.hub import Hub
from ground.ops.leader import FOLLOWER, LEADER, Leadership
from ground.ops.limits import LEVEL_NAMES
from ground.ops.liveness import ASLEEP, ONLINE, NodeInfo, NodeTracker
from ground.ops.refill import Refiller
from ground.ops.store import OpsStore
from ground.ops.timekeeper import USER as TIMEKEEPER
from ground.ops.timekeeper import TimeKeeper
from ground.parse import Parser, ParseResult
from ground.ratelog import RateLimitedLog
from wire.defs import APID_ACK, APID_EVENT, APID_HK, APID_SEISMIC
from wire.dictionary import Dictionary, load
from wire.inventory import Inventory
from wire.timetag import node_to_unix, ticks_to_unix

log = logging.getLogger("ground.ops")

LIVENESS_LEVEL = {"ONLINE": 0, "ASLEEP": 0, "STALE": 1, "LOST": 2}
HistoryFn = Callable[[str, str, str, float | None, float | None, int], dict[str, Any]]


RESYNC_MAX_PER_HOUR = 6
RESYNC_USER = "lunabase-ground (automatic resync)"  # the audit log's name for the ground itself


class Operations:
    """Ops state for one site; construct inside the event loop that will run it."""

    def __init__(
        self,
        inventory: Inventory,
        store: OpsStore | None = None,
        *,
        dictionary: Dictionary | None = None,
        publish: Callable[[str, bytes], Any] | None = None,
        light_time: float = 1.28,
        ack_timeout: float = 5.0,
        exec_timeout: float = 15.0,
        stale_factor: float = 3.0,
        lost_factor: float = 30.0,
        grace: float = 30.0,
        param_hz: float = 5.0,
        keep_days: float = 90.0,
        history: HistoryFn | None = None,
        links: Callable[[], dict[str, dict[str, Any]]] | None = None,
        time_sync_s: float = 600.0,
    ) -> None:
        self.inventory = inventory
        self.site = inventory.site
        self.dictionary = dictionary or load()
        self.store = store or OpsStore()
        self.hub = Hub()
        self.alarms = AlarmManager(self.store, self.dictionary)
        self.nodes = NodeTracker(self.site, {n.id: n.hk_period_s for n in inventory.nodes},
                                 stale_factor=stale_factor, lost_factor=lost_factor, grace=grace,
                                 log=self.store.event)
        self.commander = Commander(inventory, self.store, publish, dictionary=self.dictionary,
                                   reachable=self.nodes.reachable, light_time=light_time,
                                   ack_timeout=ack_timeout, exec_timeout=exec_timeout, hold=self.hold)
        # node clocks: synced automatically (time_sync_s < 0: never), correlated, corrected;
        # ``time_correct`` stores correction ranges (the service points it at the archive)
        self.time_correct: Callable[[str, TimeCorrection], None] | None = None
        self.timekeeper = TimeKeeper(light_time, period_s=time_sync_s, submit=self._submit_sync,
                                     correct=lambda n, c: self.time_correct(n, c) if self.time_correct else None,
                                     reachable=self.nodes.reachable)
        self.commander.owlt = self.timekeeper.owlt
        # one ops layer per site however many grounds share the archive (ground/ops/leader.py):
        # without a Leadership this ground is the only one and leads
        self.leadership: Leadership | None = None
        #: ingest hands us packets new to this process, not only to the archive (several grounds)
        self.fresh_to_me = False
        self.commander.guard = self.alarms.guard = self.guard
        self.commander.active = self.timekeeper.active = self.leading
        # automatic refill of sequence gaps (idle until the service gives it the archive)
        self.journal_bytes: dict[str, int] = {}  # node -> journal capacity from its status
        self.refiller = Refiller(self.site, submit=self.commander.submit, command=self.commander.get,
                                 reachable=self.nodes.reachable, state=lambda n: self.nodes.get(n).state,
                                 owlt=self.timekeeper.owlt, journal_bytes=self.journal_bytes.get,
                                 node_dropped=self._journal_dropped, event=self.store.event)
        self.commander.released.append(self.timekeeper.on_sent)
        self.commander.listeners.append(self.timekeeper.on_command)
        self.param_period = 1.0 / param_hz
        self.keep_days = keep_days
        self._pruned = 0.0
        self.history_fn = history
        self.links_fn = links
        # latest raw packets of a node when ingest does not pass payloads: (node, limit) -> rows
        self.raw_fn: Callable[[str, int], list[tuple[float, int, int, int, bytes]]] | None = None
        # the ingest's per-link counters and gap detection, kept here when ingest provides none
        self.link: dict[str, LinkStats] = {}
        self.latest: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
        self.raw: dict[str, collections.deque[tuple[float, int, int, int, bytes]]] = \
            collections.defaultdict(lambda: collections.deque(maxlen=64))
        self.seismic: dict[str, collections.deque[tuple[float, float, np.ndarray]]] = \
            collections.defaultdict(lambda: collections.deque(maxlen=1200))
        self.recent: dict[tuple[str, str], collections.deque[tuple[float, np.ndarray]]] = \
            collections.defaultdict(lambda: collections.deque(maxlen=600))
        self.telemetry_listeners: list[Callable[[str, str, dict[str, float], float], None]] = []
        #: (node, packet, Table of the fresh rows, their time tags, received) once per packet type
        #: per message: the web console's full-rate stream (ground/web/live.py)
        self.table_listeners: list[Callable[[str, str, Any, np.ndarray, float], None]] = []
        self._dirty: set[str] = set()
        self._node_dirty: set[str] = set()
        self._reject_logged: dict[tuple[str, str], float] = {}
        # messages from nodes of another site: archived by ingest, not watched here (counted, logged once)
        self.foreign: collections.Counter[str] = collections.Counter()
        self._tasks: list[asyncio.Task[Any]] = []
        self._parser: Parser | None = None
        # the timers' own health: each step of tick() isolated, counted, reported by health()
        self.started = time.time()
        self.ticks = 0
        self.last_tick: float | None = None
        self.tick_errors: collections.Counter[str] = collections.Counter()
        self.tick_error: str | None = None
        self.tick_failing: set[str] = set()
        self._rlog = RateLimitedLog(log, 10.0)
        #: the parts only the service knows (ingest, archive, broker): name -> part dict
        self.health_fn: Callable[[], dict[str, dict[str, Any]]] | None = None
        self.store.listeners.append(lambda e: self.hub.publish({"type": "event", **e}))
        self.alarms.listeners.append(lambda a: self.hub.publish({"type": "alarm", **a}))
        self.commander.listeners.append(lambda c: self.hub.publish({"type": "command", **c}))
        self.nodes.listeners.append(self._node_changed)
        # automatic TC_RESYNC after a node lost its counter: node -> times of the last ones
        self._resyncs: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=RESYNC_MAX_PER_HOUR))
        self._resync_nonce: dict[str, int] = {}

    def leading(self) -> bool:
        """Whether this ground runs the ops actions (it holds the leader lock, or has none)."""
        return self.leadership is None or self.leadership.leading

    def guard(self, what: str) -> None:
        """NotLeader (naming the leader) when this ground is a follower."""
        if self.leadership is not None:
            self.leadership.guard(what)

    def wake(self, node: str) -> float | None:
        """Ground (Unix) time at which a sleeping node wakes by its announcement, or None.

        Mapped with the time keeper's correlation (ground − node clock) when it has one,
        else with the liveness offset (receive time − tag), less the light time it includes.
        """
        info = self.nodes.get(node)
        nc = self.nodes.announced.get(node)
        if info.state != ASLEEP or not nc or info.next_contact is None:
            return None
        nt = self.timekeeper.get(node)
        if nt.synced and nt.offset is not None:
            return node_to_unix(nc) + nt.offset
        return info.next_contact - self.timekeeper.owlt(node)

    def hold(self, node: str) -> tuple[float | None, str] | None:
        """The commander's question: is ``node`` asleep, and until when (docs/ground-ops.md)?

        None when it is not known to sleep; else (release time = its wake − the one-way
        light time, so a TC reaches the broker before the node reconnects, or None while
        it sleeps until further notice; the reason for the history)."""
        info = self.nodes.get(node)
        if info.state != ASLEEP:
            return None
        wake = self.wake(node)
        if wake is None:
            return None, "node asleep until further notice: held until it is heard again"
        owlt = self.timekeeper.owlt(node)
        at = wake - owlt

        def hms(t: float) -> str:
            return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 10) % 10}"

        return at, f"node asleep until {hms(wake)} (announced): held, released at {hms(at)} (its contact − {owlt:.2f} s light time)"

    # -- sink interface (called by ingest after each archive commit) -----------------------

    def on_packets(self, site: str, node: str, result: ParseResult, fresh: np.ndarray | None,
                   received: float, payload: bytes | None = None) -> None:
        """Fresh packets of one MQTT message, just committed to the archive."""
        if site != self.site:
            self._foreign(site, node)
            return
        if result.count == 0:
            return
        n = result.count
        if fresh is None:
            fresh = np.ones(n, dtype=bool)
            nfresh, allfresh = n, True
        else:
            fresh = np.asarray(fresh, dtype=bool)
            nfresh = int(np.count_nonzero(fresh))
            allfresh = nfresh == n
        ls = self._link(node)
        ls.messages += 1
        ls.bytes += len(payload) if payload is not None else int(result.length.sum())
        ls.last_contact = received
        ls.count_packets(result, fresh, received)
        if nfresh == 0:
            return
        self.timekeeper.on_packets(node, result, fresh, received)
        if allfresh:
            last_ticks = int(result.ticks.max()) if n > 1 else int(result.ticks[0])
        else:
            last_ticks = int(result.ticks[fresh].max())
        hk: dict[str, float] | None = None
        for apid, table in result.tables.items():
            if allfresh:
                sub, values, rows = table, table.values, table.rows
            else:
                m = fresh[table.rows]
                if not m.any():
                    continue
                sub = _subtable(table, m)
                values, rows = sub.values, sub.rows
            ls.track(apid, result.seq[rows], result.ticks[rows], received)
            pname = table.name
            lv = self.alarms.check(site, node, sub, None) if self.leading() else None
            last = values[-1]
            entry = {"t": received, "ticks": int(result.ticks[rows[-1]]),
                     "values": dict(zip(table.columns, last.tolist(), strict=False))}
            if table.texts:
                entry["texts"] = {k: (v[-1].decode("ascii", "replace") if v else "") for k, v in sub.texts.items()}
            if lv is not None:
                entry["levels"] = {f.name: LEVEL_NAMES[int(x)] for f, x in zip(self.alarms.limits[apid].fields, lv[-1], strict=False)}
            self.latest[node][pname] = entry
            self.recent[(node, pname)].append((received, last.copy()))
            if apid == APID_HK:
                hk = dict(zip(table.columns, last.tolist(), strict=False))
            elif apid == APID_EVENT:
                self._node_events(site, node, sub, result, rows, received)
            elif apid == APID_ACK:
                self.commander.on_ack(node, sub)
            elif apid == APID_SEISMIC and sub.raw_samples is not None:
                rate_col = table.columns.index("rate")
                for k, r in enumerate(rows):
                    t0 = ticks_to_unix(int(result.ticks[r]))
                    self.seismic[node].append((t0, float(values[k, rate_col]), sub.raw_samples[k] * sub.sample_scale))
            for tfn in list(self.table_listeners):
                try:
                    tfn(node, pname, sub, result.ticks[rows], received)
                except Exception:  # a console's stream must not break ingest
                    self._rlog.error("table_listener", "live telemetry listener failed", exc_info=True)
            if self.telemetry_listeners:
                for k in range(len(values)):
                    d = dict(zip(table.columns, values[k].tolist(), strict=False))
                    for fn in list(self.telemetry_listeners):
                        fn(node, pname, d, received)
        if payload is not None:
            ring = self.raw[node]
            idx = np.arange(n) if allfresh else np.flatnonzero(fresh)
            for i in idx[-(ring.maxlen or 64):]:  # type: ignore[index]
                o, ln = int(result.offset[i]), int(result.length[i])
                ring.append((received, int(result.apid[i]), int(result.seq[i]), int(result.ticks[i]), payload[o:o + ln]))
        info = self.nodes.on_packets(node, last_ticks, received, hk)
        if hk is not None:
            info.mode = self.dictionary.enums["mode"].get(int(hk.get("mode", 0)), info.mode)
        self._dirty.add(node)

    def on_status(self, site: str, node: str, status: dict[str, Any], received: float) -> None:
        """A status message (birth, sleep announcement, last will)."""
        if site != self.site:
            self._foreign(site, node)
            return
        if not isinstance(status, dict):
            return
        self.nodes.on_status(node, status, received)
        self.timekeeper.on_status(node, status, received)
        jb = status.get("journal_bytes")
        if isinstance(jb, int) and not isinstance(jb, bool) and jb > 0:
            self.journal_bytes[node] = jb
        self._dirty.add(node)
        self.hub.publish({"type": "node", **self.node_view(self.nodes.get(node))})

    def on_rejected(self, site: str, node: str, rejected: Sequence[Any], payload: bytes | None = None) -> None:
        """Bytes ingest could not accept: counted per reason, logged at most every 10 s."""
        if site != self.site:
            self._foreign(site, node)
            return
        ls = self._link(node)
        for r in rejected:
            ls.count_error(r.reason, r.end - r.start)
            now = time.time()
            if now - self._reject_logged.get((node, r.reason), 0.0) > 10.0:
                self._reject_logged[(node, r.reason)] = now
                self.store.event("link", f"{node}: rejected {r.end - r.start} B ({r.reason})", site=site, node=node,
                                 severity="WARNING", data={"reason": r.reason, "bytes": r.end - r.start})

    def on_quarantined(self, topic: str, reason: str, detail: str, received: float) -> None:
        """A message ingest quarantined (ground/ingest): an event, at most one per reason every 10 s."""
        now = time.time()
        key = ("?", reason)
        if now - self._reject_logged.get(key, 0.0) > 10.0:
            self._reject_logged[key] = now
            self.store.event("link", f"quarantined a message on {topic[:80]!r}: {reason} ({detail[:120]})",
                             site=self.site, severity="WARNING", data={"reason": reason, "topic": topic[:128]})


    def _foreign(self, site: str, node: str) -> None:
        key = f"{site}/{node}"
        if not self.foreign[key]:
            log.warning("%s: telemetry from site %r, but this ground watches site %r: archived, not monitored",
                        key, site, self.site)
        self.foreign[key] += 1

    def _link(self, node: str) -> LinkStats:
        ls = self.link.get(node)
        if ls is None:
            ls = self.link[node] = LinkStats(self.site, node)
        return ls

    def _node_events(self, site: str, node: str, table: Any, result: ParseResult, rows: np.ndarray, received: float) -> None:
        codes = self.dictionary.enums["event"]
        sevs = self.dictionary.enums["severity"]
        c = table.columns
        texts = table.texts.get("text", [])
        for k in range(len(table)):
            v = table.values[k]
            code = codes.get(int(v[c.index("code")]), f"EVENT_{int(v[c.index('code')])}")
            sev = sevs.get(int(v[c.index("severity")]), "INFO")
            text = texts[k].decode("ascii", "replace") if k < len(texts) else ""
            a0, a1 = int(v[c.index("arg0")]), int(v[c.index("arg1")])
            self.store.event("node_event", f"{node} {code}" + (f": {text}" if text else "") + f" ({a0}, {a1})",
                             site=site, node=node, severity=sev, t=received,
                             data={"code": code, "arg0": a0, "arg1": a1, "text": text,
                                   "ticks": int(result.ticks[rows[k]])})
            if code == "TC_COUNTER_LOST" and a0 > 0 and self.leading():
                self._auto_resync(node, a0, received)

    def _auto_resync(self, node: str, nonce: int, now: float) -> None:
        """Answer a node's TC_COUNTER_LOST with TC_RESYNC(nonce), once per nonce, at most
        RESYNC_MAX_PER_HOUR per node.  Safe to automate: only the node's real nonce re-arms
        it, a forged event (someone with the node's broker password) costs one counter."""
        if self._resync_nonce.get(node) == nonce:
            return  # the node repeats its nonce on every refusal: one resync per nonce
        times = self._resyncs[node]
        if len(times) == times.maxlen and now - times[0] < 3600:
            self._rlog.warning(f"resync:{node}", "%s: TC_COUNTER_LOST again (nonce %d): %d automatic resyncs in "
                               "the last hour already; send TC_RESYNC by hand", node, nonce, len(times))
            return
        self._resync_nonce[node] = nonce
        times.append(now)

        async def send() -> None:
            try:
                await self.commander.submit(node, "TC_RESYNC", {"nonce": nonce}, user=RESYNC_USER)
            except Exception as e:  # logged; the operator can resync by hand
                log.warning("%s: automatic TC_RESYNC failed: %s", node, e)

        try:
            task = asyncio.get_running_loop().create_task(send())
            self._tasks.append(task)
            task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        except RuntimeError:
            log.warning("%s: TC_COUNTER_LOST outside the event loop; send TC_RESYNC by hand", node)

    def _journal_dropped(self, node: str) -> int | None:
        """The node's own count of packets its journal dropped (latest HK), if known."""
        v = self.latest.get(node, {}).get("HK", {}).get("values", {}).get("journal_dropped")
        return None if v is None else int(v)

    async def _submit_sync(self, node: str) -> dict[str, Any]:
        return await self.commander.submit(node, "TIME_SYNC", {}, user=TIMEKEEPER)

    def _node_changed(self, info: NodeInfo, old: str) -> None:
        # liveness is an alarm too: STALE yellow, LOST red (value = seconds since last contact)
        level = LIVENESS_LEVEL.get(info.state)
        if level is not None and self.leading():
            silent = (info.since - info.last_contact) if info.last_contact else 0.0
            self.alarms.set_condition(self.site, info.node, "NODE", "liveness", level, round(silent, 1), "s",
                                      t=info.since)
        self.hub.publish({"type": "node", **self.node_view(info)})
        if info.state == ONLINE:
            try:
                asyncio.get_running_loop().create_task(self.commander.pump())
            except RuntimeError:
                pass

    # -- views ------------------------------------------------------------------------------

    def node_view(self, info: NodeInfo) -> dict[str, Any]:
        d = info.as_dict()
        lat = self.latest.get(info.node, {})
        pw = lat.get("POWER", {}).get("values", {})
        th = lat.get("THERMAL", {}).get("values", {})
        hk = lat.get("HK", {}).get("values", {})
        d["time"] = self.timekeeper.view(info.node)
        d["soc"] = pw.get("battery_soc")
        d["battery_voltage"] = pw.get("battery_voltage")
        d["battery_temp"] = pw.get("battery_temp")
        d["electronics_temp"] = th.get("electronics_temp")
        d["surface_temp"] = th.get("surface_temp")
        d["cpu_temp"] = hk.get("cpu_temp")
        d["link"] = self.links().get(info.node) or LinkStats(self.site, info.node).view()
        levels: list[str] = []
        for e in lat.values():
            levels += list(e.get("levels", {}).values())
        d["limit_state"] = "red" if "red" in levels else "yellow" if "yellow" in levels else "ok"
        d["alarms"] = sum(1 for a in self.alarms.active() if a["node"] == info.node)
        return d

    def nodes_view(self) -> list[dict[str, Any]]:
        return [self.node_view(i) for i in sorted(self.nodes.nodes.values(), key=lambda i: i.node)]

    def links(self) -> dict[str, dict[str, Any]]:
        """Per-link counters: from ingest when it provides them, else the ops layer's own."""
        if self.links_fn is not None:
            try:
                return self.links_fn()
            except Exception:  # a counter snapshot must never break a view
                log.exception("link counters from ingest failed")
        now = time.time()
        return {n: ls.view(now) for n, ls in self.link.items()}

    def gaps_view(self, node: str | None = None, state: str | None = None, limit: int = 200) -> dict[str, Any]:
        """Sequence gaps from the archive (none without one) and the refiller's state."""
        a = self.refiller.archive
        gaps = [] if a is None else a.gaps(site=self.site, node=node, states=None if state is None else (state,),
                                           limit=limit)
        return {"gaps": gaps, "refill": self.refiller.view()}

    def latest_view(self, node: str) -> dict[str, Any]:
        """Latest engineering values per packet/field with unit, enum name and limit state."""
        out: dict[str, Any] = {}
        for pname, e in self.latest.get(node, {}).items():
            p = self.dictionary.packet(pname)
            fields = {}
            for f in p.fields:
                if f.is_numeric:
                    v = e["values"].get(f.name)
                    fd = {"value": v, "unit": f.unit, "state": e.get("levels", {}).get(f.name, "ok")}
                    if f.enum is not None and v is not None:
                        fd["text"] = f.enum.get(int(v), str(int(v)))
                else:
                    fd = {"value": e.get("texts", {}).get(f.name, ""), "unit": "", "state": "ok"}
                fields[f.name] = fd
            out[pname] = {"t": e["t"], "ticks": e["ticks"], "fields": fields}
        return out

    def params_view(self, node: str, packet: str, field: str, since: float | None, until: float | None,
                    limit: int) -> dict[str, Any]:
        """History of one parameter: from the archive when wired, else the recent memory."""
        if self.history_fn is not None:
            return self.history_fn(node, packet, field, since, until, limit)
        p = self.dictionary.packet(packet)
        col = [f.name for f in p.numeric_fields].index(field)
        pts = [(t, float(v[col])) for t, v in self.recent.get((node, p.name), ())
               if (since is None or t >= since) and (until is None or t < until)]
        count = len(pts)
        if count > limit > 0:
            step = count / limit
            pts = [pts[count - 1 - int(i * step)] for i in range(limit)][::-1]
        return {"node": node, "packet": p.name, "field": field, "source": "memory", "count": count,
                "time": [t for t, _ in pts], "value": [v for _, v in pts]}

    def packets_view(self, node: str, limit: int = 20) -> list[dict[str, Any]]:
        """The node's latest raw packets (hex) with their decoded fields."""
        if self._parser is None:
            from ground.parse import PyParser

            self._parser = PyParser(self.dictionary)
        out = []
        rows = list(self.raw.get(node, ()))[-limit:]
        if not rows and self.raw_fn is not None:
            rows = self.raw_fn(node, limit)
        for received, apid, seq, ticks, data in rows[::-1]:
            res = self._parser.parse(data)
            fields: dict[str, Any] = {}
            for t in res.tables.values():
                fields = dict(zip(t.columns, t.values[0].tolist(), strict=False))
                fields.update({k: v[0].decode("ascii", "replace") for k, v in t.texts.items() if v})
            name = self.dictionary.packet(apid).name if self.dictionary.has_apid(apid) else f"APID {apid}"
            out.append({"received": received, "apid": apid, "packet": name, "seq": seq, "ticks": ticks,
                        "length": len(data), "hex": data.hex(), "fields": fields})
        return out

    def seismic_view(self, node: str, seconds: float = 60.0, max_points: int = 2000) -> dict[str, Any]:
        """The latest waveform, decimated (block means) to at most ``max_points`` samples."""
        batches = list(self.seismic.get(node, ()))
        if not batches:
            return {"node": node, "t0": None, "dt": None, "rate": None, "x": [], "y": [], "z": []}
        tend = batches[-1][0] + len(batches[-1][2]) / max(batches[-1][1], 1e-9)
        batches = [b for b in batches if b[0] >= tend - seconds]
        data = np.concatenate([b[2] for b in batches]) if batches else np.empty((0, 3))
        rate = batches[-1][1] if batches else 0.0
        step = max(1, int(np.ceil(len(data) / max_points)))
        n = len(data) // step * step
        dec = data[len(data) - n:].reshape(-1, step, data.shape[1]).mean(axis=1) if n else data
        spec = self.dictionary.packet("SEISMIC").samples
        axes = spec.axes if spec is not None else ("x", "y", "z")
        out: dict[str, Any] = {"node": node, "t0": batches[0][0] if batches else None,
                               "dt": step / rate if rate else None, "rate": rate, "decimation": step}
        for i, a in enumerate(axes):
            out[a] = [round(x, 3) for x in dec[:, i].tolist()]
        return out

    def dictionary_view(self) -> dict[str, Any]:
        d = self.dictionary

        def fld(f: Any) -> dict[str, Any]:
            return {"name": f.name, "type": f.type, "unit": f.unit, "description": f.description,
                    "yellow": f.yellow, "red": f.red, "persistence": f.persistence,
                    "enum": {str(k): v for k, v in f.enum.items()} if f.enum else None,
                    "min": f.min, "max": f.max}

        return {
            "version": d.meta.get("version"),
            "packets": [{"apid": p.apid, "name": p.name, "description": p.description,
                         "fields": [fld(f) for f in p.fields],
                         "samples": {"count": p.samples.count, "axes": list(p.samples.axes), "unit": p.samples.unit}
                         if p.samples else None} for p in d.packets],
            "commands": [{"opcode": c.opcode, "name": c.name, "description": c.description,
                          "hazardous": c.hazardous, "args": [fld(a) for a in c.args]} for c in d.commands],
            "enums": {k: {str(i): n for i, n in v.items()} for k, v in d.enums.items()},
        }

    # -- timers -----------------------------------------------------------------------------

    def flush_params(self) -> None:
        """Publish the latest values of nodes that changed since the last flush."""
        dirty, self._dirty = self._dirty, set()
        self._node_dirty |= dirty
        for node in dirty:
            lat = self.latest.get(node, {})
            self.hub.publish({"type": "param", "node": node, "site": self.site,
                              "packets": {p: {"t": e["t"], "ticks": e["ticks"], "values": e["values"],
                                                  "levels": e.get("levels", {})}
                                          for p, e in lat.items()}})

    async def tick(self, now: float | None = None) -> None:
        """Once a second: liveness rules, shelving expiry, command queue, gap refill, link rates."""
        now = time.time() if now is None else now
        failing: set[str] = set()
        # each step isolated: one that raises is counted, reported (an event when it starts
        # failing, a rate-limited log line) and the others still run, every second
        self._step("liveness", failing, self.nodes.tick, now)
        lead = self.leading()  # a follower only watches: no alarms, syncs, releases, pruning
        if lead:
            self._step("shelving", failing, self.alarms.expire_shelves, now)
            try:
                await self.timekeeper.tick(now)
            except Exception as e:
                self._step_failed("time", failing, e)
            try:
                await self.commander.pump(now)
            except Exception as e:
                self._step_failed("commands", failing, e)
            try:
                await self.refiller.tick(now)
            except Exception as e:
                self._step_failed("refill", failing, e)
        if lead and now - self._pruned > 3600.0:  # ops database retention, hourly
            self._pruned = now
            self._step("prune", failing, self.store.prune, self.keep_days, now)
        nd, self._node_dirty = self._node_dirty, set()
        for node in sorted(nd):  # last contact, SOC, temperatures... at most once a second
            self._step("node_view", failing, lambda n=node: self.hub.publish(
                {"type": "node", **self.node_view(self.nodes.get(n))}))
        self._step("link_view", failing, lambda: self.hub.publish({"type": "link", "links": self.links()}))
        self.tick_failing = failing
        self.ticks += 1
        self.last_tick = time.time()

    def _step(self, name: str, failing: set[str], fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:
            self._step_failed(name, failing, e)

    def _step_failed(self, name: str, failing: set[str], e: Exception) -> None:
        self.tick_errors[name] += 1
        self.tick_error = f"{name}: {type(e).__name__}: {e}"[:300]
        self._rlog.error(name, "ops tick: %s failed (%d time(s))", name, self.tick_errors[name], exc_info=True)
        if name not in self.tick_failing and name not in failing:
            try:
                self.store.event("ground", f"ops {name} failed: {type(e).__name__}: {e}"[:300], site=self.site,
                                 severity="ERROR", data={"step": name})
            except Exception:  # the ops database itself may be what fails
                pass
        failing.add(name)

    def health(self, now: float | None = None) -> dict[str, Any]:
        """The ground's health (ground/health.py): the ops parts, plus the service's via ``health_fn``."""
        now = time.time() if now is None else now
        parts: dict[str, dict[str, Any]] = {}
        if self.health_fn is not None:
            try:
                parts.update(self.health_fn())
            except Exception as e:  # health must answer, and say what it could not check
                parts["service"] = _health.part(False, f"service: health check failed: {type(e).__name__}: {e}")
        parts["commands"] = _health.commands_part(self.commander, now)
        parts["ticks"] = _health.ticks_part(self, now)
        if self.leadership is not None:
            parts["leader"] = _health.leader_part(self.leadership, now)
        return _health.combine(parts, site=self.site, role=LEADER if self.leading() else FOLLOWER)

    async def run(self) -> None:
        """The timers (param flush at ``param_hz``, ``tick`` every second) until cancelled."""
        last_tick = 0.0
        while True:
            await asyncio.sleep(self.param_period)
            self.flush_params()
            if time.monotonic() - last_tick >= 1.0:
                last_tick = time.monotonic()
                try:
                    await self.tick()
                except Exception:  # timers must survive a bad tick
                    self._rlog.error("tick", "ops tick failed", exc_info=True)


def _subtable(table: Any, m: np.ndarray) -> Any:
    """The Table restricted to rows where m is True (the same object when all are)."""
    if m.all():
        return table
    from ground.parse import Table

    return Table(apid=table.apid, name=table.name, columns=table.columns, rows=table.rows[m],
                 values=table.values[m], raw_samples=None if table.raw_samples is None else table.raw_samples[m],
                 sample_scale=table.sample_scale,
                 texts={k: [x for x, keep in zip(v, m, strict=False) if keep] for k, v in table.texts.items()})

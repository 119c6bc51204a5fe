"""The console's view of the base: a plain in-memory store fed by the ground's client interface.

The ``Feed`` (feed.py) writes into a ``BaseModel``; screens read it on a timer.  Each
topic ("nodes", "alarms", ...) has a version number that is bumped on every change, so a
screen redraws only when something it shows changed, and at most a few times per second
however fast the ground pushes: updates are coalesced here, never queued per message.

Records are the client interface's shapes (ground/client_types.py, docs/ground-api.md),
read by their documented keys only, with no fallback to other names: a change of shape
fails tests/ground/test_api_contract.py and the type check instead of showing "—" here.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, cast

from ground.client_types import Alarm, CommandRow, Event, LatestView, LinkCounters, NodeView, ParamHistory

TOPICS = ("nodes", "latest", "alarms", "events", "commands", "links", "dictionary", "connection", "series", "health")
SERIES_LEN = 600  # samples kept per plotted parameter


def node_key(d: Any) -> str:
    """The node id of a node / param / alarm record (its ``node`` field)."""
    return str(d["node"])


@dataclass
class Connection:
    """Where the console stands with the ground."""

    url: str
    state: str = "connecting"  # connecting | live | reconnecting
    since: float = field(default_factory=time.time)
    last_message: float = 0.0
    messages: int = 0
    attempts: int = 0
    error: str = ""


class BaseModel:
    """Everything the console knows, keyed for direct lookup; see module docstring."""

    def __init__(self, url: str = "") -> None:
        self.conn = Connection(url)
        self.nodes: dict[str, NodeView] = {}
        # (packet, field) -> the model's own record: node, packet, field, time, value, unit, limit, text
        self.latest: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.alarms: dict[str, Alarm] = {}
        self.events: deque[Event] = deque(maxlen=500)
        self.commands: dict[str, CommandRow] = {}
        self.links: dict[str, LinkCounters] = {}
        self.dictionary: dict[str, Any] = {}
        self.health: dict[str, Any] = {}  # GET /api/health: {"ok", "reasons", "parts"}
        self.series: dict[tuple[str, str, str], deque[tuple[float, float]]] = {}
        self.versions: dict[str, int] = {t: 0 for t in TOPICS}
        self._event_keys: set[Any] = set()
        self.max_event_id: int | None = None
        self._enum_cache: dict[tuple[str, str], dict[str, str]] = {}
        self._enum_cache_v = -1

    # -- versions -------------------------------------------------------------------
    def bump(self, topic: str) -> None:
        self.versions[topic] = self.versions.get(topic, 0) + 1

    def version(self, *topics: str) -> tuple[int, ...]:
        """A value that changes whenever any of ``topics`` changed."""
        return tuple(self.versions.get(t, 0) for t in topics)

    # -- connection -----------------------------------------------------------------
    def set_connection(self, state: str, error: str = "") -> None:
        if state != self.conn.state or error != self.conn.error:
            self.conn.state = state
            self.conn.error = error
            self.conn.since = time.time()
            if state == "reconnecting":
                self.conn.attempts += 1
            elif state == "live":
                self.conn.attempts = 0
            self.bump("connection")

    # -- snapshots (GET) ------------------------------------------------------------
    def set_health(self, h: Any) -> None:
        """The ground's own health (``ok`` false with ``reasons`` when a part is broken)."""
        if isinstance(h, dict) and h != self.health:
            self.health = h
            self.bump("health")

    def health_problem(self) -> str | None:
        """None when the ground says it is ok (or has not said yet), else its first reason."""
        if not self.health or self.health.get("ok", True):
            return None
        reasons = self.health.get("reasons") or ["not ok"]
        return str(reasons[0]) + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")

    def set_nodes(self, nodes: list[NodeView]) -> None:
        self.nodes = {node_key(n): n for n in nodes}
        self.bump("nodes")

    def set_latest(self, node: str, latest: LatestView) -> None:
        table: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in _param_records(latest):
            table[(str(rec.get("packet", "")), str(rec.get("field", "")))] = rec
        self.latest[node] = table
        self.bump("latest")

    def set_alarms(self, alarms: list[Alarm]) -> None:
        self.alarms = {str(a["id"]): a for a in alarms}
        self.bump("alarms")

    def add_events(self, events: list[Event]) -> None:
        changed = False
        for e in events:
            k = e["id"]
            if k in self._event_keys:
                continue
            self._event_keys.add(k)
            self.events.append(e)
            changed = True
        if len(self._event_keys) > 4 * (self.events.maxlen or 500):
            self._event_keys = {e["id"] for e in self.events}
        if changed:
            ordered = sorted(self.events, key=lambda e: (e["t"], e["id"]))
            self.events.clear()
            self.events.extend(ordered)
            ids = [e["id"] for e in ordered]
            if ids:
                self.max_event_id = max(self.max_event_id or 0, max(ids))
            self.bump("events")

    def set_commands(self, commands: list[CommandRow]) -> None:
        for c in commands:
            self.commands[str(c["id"])] = c
        self.bump("commands")

    def set_links(self, links: dict[str, LinkCounters]) -> None:
        """GET /api/links (and the "link" push): counters by node."""
        self.links = dict(links)
        self.bump("links")

    def set_dictionary(self, d: dict[str, Any]) -> None:
        self.dictionary = d
        self.bump("dictionary")

    def seed_series(self, node: str, packet: str, fld: str, hist: ParamHistory) -> None:
        """History from GET /api/params (columnar ``time``/``value``) for a plotted parameter."""
        s = self.series.setdefault((node, packet, fld), deque(maxlen=SERIES_LEN))
        pts = [(float(t), float(v)) for t, v in zip(hist["time"], hist["value"], strict=True)
               if isinstance(v, (int, float))]
        last = s[-1][0] if s else float("-inf")
        merged = sorted(set(list(s) + [p for p in pts if p[0] <= last] + [p for p in pts if p[0] > last]))
        s.clear()
        s.extend(merged[-SERIES_LEN:])
        self.bump("series")

    # -- live pushes (WS) -----------------------------------------------------------
    def apply(self, msg: dict[str, Any]) -> None:
        """Fold one pushed message ({"type": ..., ...}) into the model."""
        self.conn.messages += 1
        self.conn.last_message = time.time()
        kind = msg.get("type")
        items = msg["items"] if isinstance(msg.get("items"), list) else [msg]  # rows arrive unwrapped
        if kind == "snapshot":
            if isinstance(msg.get("nodes"), list):
                self.set_nodes(msg["nodes"])
            if isinstance(msg.get("alarms"), list):
                self.set_alarms(msg["alarms"])
            if msg.get("links") is not None:
                self.set_links(msg["links"])
        elif kind == "node":
            for n in items:
                k = node_key(n)
                self.nodes[k] = cast(NodeView, {**self.nodes.get(k, {}), **{a: b for a, b in n.items() if a != "type"}})
            self.bump("nodes")
        elif kind == "param":
            for rec in items:
                for r in _param_records(rec):
                    self._apply_param(r)
            self.bump("latest")
        elif kind == "alarm":
            for a in items:
                aid = str(a["id"])
                if a["state"] == "cleared":
                    self.alarms.pop(aid, None)
                else:
                    self.alarms[aid] = cast(Alarm, {**self.alarms.get(aid, {}), **{x: y for x, y in a.items() if x != "type"}})
            self.bump("alarms")
        elif kind == "event":
            self.add_events([cast(Event, {x: y for x, y in e.items() if x != "type"}) for e in items])
        elif kind == "command":
            for c in items:
                cid = str(c["id"])
                self.commands[cid] = cast(CommandRow, {**self.commands.get(cid, {}),
                                                       **{x: y for x, y in c.items() if x != "type"}})
            self.bump("commands")
        elif kind == "link":
            self.set_links(msg["links"])

    def _apply_param(self, r: dict[str, Any]) -> None:
        node = node_key(r)
        key = (str(r.get("packet", "")), str(r.get("field", "")))
        rec = {**self.latest[node].get(key, {}), **r}
        enum = self._enums().get(key)
        v = r["value"]
        if enum is not None and isinstance(v, (int, float)):
            rec["text"] = enum.get(str(int(v)), str(int(v)))
        self.latest[node][key] = rec
        s = self.series.get((node, key[0], key[1]))
        if s is not None and isinstance(v, (int, float)):
            t = time.time() if r["time"] is None else float(r["time"])
            if not s or t > s[-1][0]:
                s.append((t, float(v)))
                self.bump("series")

    def _enums(self) -> dict[tuple[str, str], dict[str, str]]:
        if self._enum_cache_v != self.versions["dictionary"]:
            self._enum_cache = {k: f["enum"] for k, f in self.dict_fields().items() if f.get("enum")}
            self._enum_cache_v = self.versions["dictionary"]
        return self._enum_cache

    # -- queries --------------------------------------------------------------------
    def node_ids(self) -> list[str]:
        return sorted(self.nodes)

    def active_alarms(self) -> list[Alarm]:
        """Alarms worst first (severity, then unacknowledged, then newest)."""
        from ground.console.render import SEVERITY_RANK

        def key(a: Alarm) -> tuple[int, int, float]:
            sev = SEVERITY_RANK.get(a["severity"].upper(), 9)
            acked = 1 if _is_acked(a) else 0
            return (sev, acked, -(a["raised_at"] or 0.0))

        return sorted(self.alarms.values(), key=key)

    def unacked_count(self) -> int:
        return sum(1 for a in self.alarms.values() if not _is_acked(a) and not _is_shelved(a))

    def commands_list(self) -> list[CommandRow]:
        return sorted(self.commands.values(), key=lambda c: -c["id"])

    def dict_commands(self) -> list[dict[str, Any]]:
        cmds = self.dictionary.get("commands", [])
        return list(cmds.values()) if isinstance(cmds, dict) else list(cmds)

    def dict_fields(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(packet, field) → field definition (unit, limits) from the dictionary."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        pkts = self.dictionary.get("packets", [])
        for p in pkts.values() if isinstance(pkts, dict) else pkts:
            for f in p.get("fields", []):
                out[(str(p.get("name")), str(f.get("name")))] = f
        return out


def _is_acked(a: Alarm) -> bool:
    return a["state"] == "acknowledged"


def _is_shelved(a: Alarm) -> bool:
    until = a.get("shelved_until")
    return bool(a.get("shelved") or (until and until > time.time()))


def _param_records(data: Any) -> list[dict[str, Any]]:
    """Flatten GET /api/latest (``LatestView``: ``{"node", "packets": {packet: {"t",
    "fields": {field: {value, unit, state, text}}}}}``) or a "param" push (``{"node",
    "packets": {packet: {"t", "values": {field: v}, "levels": {field: level}}}}``) into the
    model's records: ``node, packet, field, time, value`` and ``unit``, ``limit``, ``text``
    where the shape carries them (docs/ground-api.md)."""
    node = data["node"]
    out: list[dict[str, Any]] = []
    for p, e in data["packets"].items():
        t = e["t"]
        if "fields" in e:  # GET /api/latest
            for f, fd in e["fields"].items():
                rec = {"node": node, "packet": p, "field": f, "time": t, "value": fd.get("value"),
                       "unit": fd.get("unit", ""), "limit": fd.get("state", "ok")}
                if "text" in fd:
                    rec["text"] = fd["text"]
                out.append(rec)
        else:  # the "param" push
            levels = e.get("levels", {})
            for f, v in e["values"].items():
                rec = {"node": node, "packet": p, "field": f, "time": t, "value": v}
                if f in levels:
                    rec["limit"] = levels[f]
                out.append(rec)
    return out

"""A stand-in ground for developing and unit-testing the console without a ground segment.

``FakeGround`` has the coroutine methods of ``ground.client.GroundClient`` and answers
in the same shapes (the TypedDicts of ground/client_types.py, so the type check holds the
fake to the contract) from an in-memory base of a few nodes (one asleep, one lost, one with a red battery) that
changes every time it is asked, so screens have something live to show.  The real tests
run against the real ground (tests/console/test_console_ground.py).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from ground.client_types import (
    Alarm,
    CommandRow,
    Event,
    LatestView,
    LinkCounters,
    NodeTime,
    NodeView,
    PacketRow,
    ParamHistory,
    SeismicView,
)
from wire import dictionary as wdict


def dictionary_json() -> dict[str, Any]:
    """The shape of GET /api/dictionary, built from wire/dictionary.toml."""
    d = wdict.load()
    pk = []
    for p in d.packets:
        pk.append({"name": p.name, "apid": p.apid, "fields": [
            {"name": f.name, "type": f.type, "unit": f.unit, "yellow": f.yellow, "red": f.red,
             "enum": {str(k): v for k, v in f.enum.items()} if f.enum else None} for f in p.fields],
            "samples": {"count": p.samples.count, "axes": list(p.samples.axes), "unit": p.samples.unit}
            if p.samples else None})
    cmds = []
    for c in d.commands:
        cmds.append({"name": c.name, "opcode": c.opcode, "hazardous": c.hazardous, "description": c.description,
                     "args": [{"name": a.name, "type": a.type, "unit": a.unit, "min": a.min, "max": a.max,
                               "enum": {str(k): v for k, v in a.enum.items()} if a.enum else None} for a in c.args]})
    return {"packets": pk, "commands": cmds}


class FakeGround:
    """In-memory ground; ``fail`` = True makes every call raise (a ground restart)."""

    def __init__(self, nodes: tuple[str, ...] = ("n01", "n02", "n03", "n04"), rate_hz: float = 20.0) -> None:
        self.node_ids = nodes
        self.fail = False
        self.rate_hz = rate_hz
        self.health_reasons: list[str] = []  # what /api/health says is broken (empty: ok)
        self.t0 = time.time()
        self._ids = itertools.count(1)
        self.alarm_list: list[Alarm] = [
            _alarm(1, "n02", "POWER", "battery_soc", "red", 7.5, "%", self.t0 - 90),
            _alarm(2, "n01", "HK", "loop_lag", "yellow", 350, "ms", self.t0 - 30),
        ]
        self.cmds: dict[int, CommandRow] = {}
        self.sent: list[CommandRow] = []

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("fake ground down")

    async def close(self) -> None:
        return None

    async def dictionary(self) -> dict[str, Any]:
        self._check()
        return dictionary_json()

    async def nodes(self) -> list[NodeView]:
        self._check()
        now = time.time()
        out: list[NodeView] = []
        for i, n in enumerate(self.node_ids):
            state = ["ONLINE", "ONLINE", "ASLEEP", "LOST"][i % 4]
            online = state == "ONLINE"
            link: LinkCounters = {
                "packets": 1000 * (i + 1), "messages": 250 * (i + 1), "bytes": 64000 * (i + 1),
                "packets_per_s": 12.0 if online else 0.0, "bytes_per_s": 900.0 if online else 0.0,
                "errors": {"crc": i, "length": 0}, "rejected_bytes": 56 * i, "gaps": i * 2, "missing": i * 2,
                "duplicates": i, "collisions": 0, "last_contact": now - 1}
            clock: NodeTime = {"synced": True, "quality": "synced", "offset_s": 0.001, "drift_ppm": 0.0,
                               "owlt_s": 1.28, "rtt_s": 2.56, "syncs": 1, "last_sync": self.t0, "last_step_s": 0.0,
                               "residual_s": 0.001, "pending": None, "boot": 3 + i}
            out.append({
                "site": "shackleton", "node": n, "state": state, "since": self.t0, "reason": "",
                "last_contact": now - (1 if online else 600 if state == "ASLEEP" else 5000),
                "last_packet": now - 1, "status": "asleep" if state == "ASLEEP" else "online",
                "mode": ["DAY", "EMERGENCY", "NIGHT", "DAY"][i % 4], "boot": 3 + i, "hk_period": 1.0,
                "clock_offset": 0.001, "next_contact": now + 1800 if state == "ASLEEP" else None,
                "next_contact_hk": None, "fw": "fake",
                "soc": [82.5, 7.5, 55.0, 40.0][i % 4], "battery_voltage": [3.98, 3.1, 3.7, 3.6][i % 4],
                "battery_temp": [18.0, 30.0, -2.0, 4.0][i % 4], "electronics_temp": [21.3, 65.0, -12.0, 5.0][i % 4],
                "surface_temp": -20.0, "cpu_temp": 31.0, "link": link,
                "limit_state": ["ok", "red", "ok", "ok"][i % 4], "alarms": [0, 1, 0, 0][i % 4], "time": clock,
            })
        return out

    async def latest(self, node: str) -> LatestView:
        self._check()
        t = time.time() - self.t0
        now = time.time()
        out: LatestView = {"node": node, "packets": {}}
        for pk, f, u, v, lim in (
            ("HK", "uptime", "s", int(t) + 1000, "ok"), ("HK", "free_heap", "B", 61000 + int(500 * math.sin(t)), "ok"),
            ("HK", "loop_lag", "ms", 350, "yellow"), ("HK", "cpu_temp", "degC", 31.2 + math.sin(t / 5), "ok"),
            ("POWER", "battery_voltage", "V", 3.9 + 0.05 * math.sin(t / 3), "ok"),
            ("POWER", "battery_soc", "%", 7.5 if node == "n02" else 80.0, "red" if node == "n02" else "ok"),
            ("THERMAL", "electronics_temp", "degC", 20 + 3 * math.sin(t / 7), "ok"),
            ("RADIATION", "dose_rate", "uGy/h", 57 + random.random() * 5, "ok"),
        ):
            p = out["packets"].setdefault(pk, {"t": now, "ticks": 0, "fields": {}})
            p["fields"][f] = {"value": v, "unit": u, "state": lim}
        return out

    async def params(self, node: str, packet: str, field: str, since: float | None = None,
                     until: float | None = None, limit: int = 1000) -> ParamHistory:
        self._check()
        now = time.time()
        return {"node": node, "packet": packet, "field": field, "source": "memory", "count": 60,
                "time": [now - 60 + i for i in range(60)], "value": [20 + 3 * math.sin(i / 5) for i in range(60)]}

    async def alarms(self) -> list[Alarm]:
        self._check()
        return [_copy(a) for a in self.alarm_list]

    def _alarm_by_id(self, alarm_id: int) -> Alarm:
        for a in self.alarm_list:
            if a["id"] == alarm_id:
                return a
        raise KeyError(alarm_id)

    async def ack(self, alarm_id: int) -> Alarm:
        self._check()
        a = self._alarm_by_id(alarm_id)
        a["state"], a["acked_by"], a["acked_at"] = "acknowledged", "fake", time.time()
        return _copy(a)

    async def shelve(self, alarm_id: int, minutes: int) -> Alarm:
        self._check()
        a = self._alarm_by_id(alarm_id)
        a["shelved"], a["shelved_by"], a["shelved_until"] = True, "fake", time.time() + 60 * minutes
        return _copy(a)

    async def unshelve(self, alarm_id: int) -> Alarm:
        self._check()
        a = self._alarm_by_id(alarm_id)
        a["shelved"], a["shelved_by"], a["shelved_until"] = False, None, None
        return _copy(a)

    async def events(self, since: float | None = None, limit: int = 100, **kw: Any) -> list[Event]:
        self._check()
        return [{"id": i + 1, "t": self.t0 - 10 * i, "site": "shackleton", "node": self.node_ids[i % len(self.node_ids)],
                 "kind": "node_event", "severity": ["info", "warning"][i % 2], "message": f"fake event {i}",
                 "data": {"code": ["BOOT", "LINK_UP", "MODE_CHANGE"][i % 3]}} for i in range(12)]

    async def send_command(self, node: str, command: str, args: dict[str, Any] | None = None, user: str = "",
                           confirm: bool = False, not_before: float | None = None,
                           not_after: float | None = None) -> CommandRow:
        self._check()
        cid = next(self._ids)
        cdef = wdict.load().command(command)
        now = time.time()
        c: CommandRow = {"id": cid, "site": "shackleton", "node": node, "command": command, "opcode": cdef.opcode,
                         "args": args or {}, "user": user or "fake", "submitted": now, "not_before": not_before,
                         "not_after": not_after, "counter": None, "stage": "QUEUED", "reason": None, "updated": now,
                         "history": [[now, "QUEUED", None]], "hazardous": cdef.hazardous, "confirmed": confirm,
                         "approved_by": None}
        self.cmds[cid] = c
        self.sent.append(c)
        asyncio.get_running_loop().create_task(self._progress(c))
        return {**c}

    async def _progress(self, c: CommandRow) -> None:
        for st in ("SENT", "ACCEPTED", "EXECUTED"):
            await asyncio.sleep(0.3)
            c["stage"] = st
            c["updated"] = time.time()
            c["history"].append([c["updated"], st, None])

    async def commands(self) -> list[CommandRow]:
        self._check()
        return [{**c} for c in self.cmds.values()]

    async def packets(self, node: str, limit: int = 20) -> list[PacketRow]:
        self._check()
        import struct

        from wire import ccsds, defs, timetag

        out: list[PacketRow] = []
        pb = ccsds.PacketBuffer(defs.APID_POWER, defs.POWER_LEN)
        for i in range(min(limit, 5)):
            struct.pack_into(defs.POWER_FMT, pb.buf, 12, 5000, 300, 3950, 120, 8000 + i, 1800, 1200, 0)
            coarse = int(timetag.unix_to_node(time.time()))
            raw = bytes(pb.finish(coarse, 0))
            out.append({"received": time.time() - i, "apid": defs.APID_POWER, "packet": "POWER", "seq": pb.seq - 1,
                        "ticks": coarse << 16, "length": len(raw), "hex": raw.hex(),
                        "fields": {"battery_voltage": 3.95, "battery_soc": 80.0 + i / 100}})
        return out

    async def health(self) -> dict[str, Any]:
        self._check()
        return {"ok": not self.health_reasons, "reasons": list(self.health_reasons), "time": time.time(),
                "parts": {}}

    async def links(self) -> dict[str, LinkCounters]:
        self._check()
        return {n["node"]: n["link"] for n in await self.nodes()}

    async def seismic(self, node: str, seconds: float = 30) -> SeismicView:
        self._check()
        n = 300
        x, y, z = ([math.sin(i / (4 + k)) * math.exp(-i / 200) * 50 for i in range(n)] for k in range(3))
        return {"node": node, "t0": time.time() - n / 10, "dt": 0.1, "rate": 10.0, "decimation": 1,
                "x": x, "y": y, "z": z}

    async def live(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            self._check()
            await asyncio.sleep(1.0 / self.rate_hz)
            t = time.time()
            n = random.choice(self.node_ids)
            yield {"type": "param", "node": n, "site": "shackleton", "packets": {"THERMAL": {
                "t": t, "ticks": 0, "values": {"electronics_temp": 20 + 3 * math.sin(t / 7)},
                "levels": {"electronics_temp": "ok"}}}}


def _alarm(aid: int, node: str, packet: str, field: str, severity: str, value: float, unit: str, t: float) -> Alarm:
    return {"id": aid, "site": "shackleton", "node": node, "packet": packet, "field": field, "state": "raised",
            "severity": severity, "max_severity": severity, "value": value, "unit": unit, "returned": 0,
            "raised_at": t, "updated_at": t, "acked_by": None, "acked_at": None, "cleared_at": None,
            "shelved_until": None, "shelved_by": None, "shelved": False}


def _copy(a: Alarm) -> Alarm:
    return {**a}

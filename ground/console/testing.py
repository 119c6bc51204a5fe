"""A stand-in ground for developing and unit-testing the console without a ground segment.

``FakeGround`` has the coroutine methods of ``ground.client.GroundClient`` and answers
from an in-memory base of a few nodes (one asleep, one lost, one with a red battery) that
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

from ground.client_types import ParamHistory
from wire import dictionary as wdict


def dictionary_json() -> dict[str, Any]:
    """The shape of GET /api/dictionary, built from wire/dictionary.toml."""
    d = wdict.load()
    pk = []
    for p in d.packets:
        pk.append({"name": p.name, "apid": p.apid, "fields": [
            {"name": f.name, "type": f.type, "unit": f.unit, "yellow": f.yellow, "red": f.red,
             "enum": {str(k): v for k, v in f.enum.items()} if f.enum else None} for f in p.fields]})
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
        self.alarm_list: list[dict[str, Any]] = [
            {"id": "1", "node": "n02", "packet": "POWER", "field": "battery_soc", "severity": "CRITICAL", "value": 7.5,
             "unit": "%", "limit": "red", "state": "UNACKED", "time": self.t0 - 90, "message": "below red 10"},
            {"id": "2", "node": "n01", "packet": "HK", "field": "loop_lag", "severity": "WARNING", "value": 350,
             "unit": "ms", "limit": "yellow", "state": "UNACKED", "time": self.t0 - 30, "message": "above yellow 200"},
        ]
        self.cmds: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("fake ground down")

    async def close(self) -> None:
        return None

    async def dictionary(self) -> dict[str, Any]:
        self._check()
        return dictionary_json()

    async def nodes(self) -> list[dict[str, Any]]:
        self._check()
        now = time.time()
        out = []
        for i, n in enumerate(self.node_ids):
            state = ["ONLINE", "ONLINE", "ASLEEP", "LOST"][i % 4]
            out.append({
                "site": "shackleton", "node": n, "state": state, "mode": ["DAY", "EMERGENCY", "NIGHT", "DAY"][i % 4],
                "last_contact": now - (1 if state == "ONLINE" else 600 if state == "ASLEEP" else 5000),
                "next_contact": now + 1800 if state == "ASLEEP" else None, "boot": 3 + i,
                "soc": [82.5, 7.5, 55.0, 40.0][i % 4], "battery_voltage": [3.98, 3.1, 3.7, 3.6][i % 4],
                "electronics_temp": [21.3, 65.0, -12.0, 5.0][i % 4], "battery_temp": [18.0, 30.0, -2.0, 4.0][i % 4],
                "limits": {"soc": ["ok", "red", "ok", "ok"][i % 4], "battery_voltage": ["ok", "red", "ok", "ok"][i % 4],
                           "electronics_temp": ["ok", "yellow", "ok", "ok"][i % 4]},
                "link": {"packets_per_s": 12.0 if state == "ONLINE" else 0.0, "bytes_per_s": 900.0 if state == "ONLINE" else 0.0,
                         "errors": {"crc": i, "length": 0}, "rejected_bytes": 56 * i, "gaps": i * 2, "duplicates": i},
            })
        return out

    async def latest(self, node: str) -> list[dict[str, Any]]:
        self._check()
        t = time.time() - self.t0
        recs = []
        for pk, f, u, v, lim in (
            ("HK", "uptime", "s", int(t) + 1000, "ok"), ("HK", "free_heap", "B", 61000 + int(500 * math.sin(t)), "ok"),
            ("HK", "loop_lag", "ms", 350, "yellow"), ("HK", "cpu_temp", "degC", 31.2 + math.sin(t / 5), "ok"),
            ("POWER", "battery_voltage", "V", 3.9 + 0.05 * math.sin(t / 3), "ok"),
            ("POWER", "battery_soc", "%", 7.5 if node == "n02" else 80.0, "red" if node == "n02" else "ok"),
            ("THERMAL", "electronics_temp", "degC", 20 + 3 * math.sin(t / 7), "ok"),
            ("RADIATION", "dose_rate", "uGy/h", 57 + random.random() * 5, "ok"),
        ):
            recs.append({"node": node, "packet": pk, "field": f, "value": v, "unit": u, "limit": lim, "time": time.time()})
        return recs

    async def params(self, node: str, packet: str, field: str, since: float | None = None,
                     until: float | None = None, limit: int = 1000) -> ParamHistory:
        self._check()
        now = time.time()
        return {"node": node, "packet": packet, "field": field, "source": "memory", "count": 60,
                "time": [now - 60 + i for i in range(60)], "value": [20 + 3 * math.sin(i / 5) for i in range(60)]}

    async def alarms(self) -> list[dict[str, Any]]:
        self._check()
        return [dict(a) for a in self.alarm_list]

    async def ack(self, alarm_id: str) -> dict[str, Any]:
        self._check()
        for a in self.alarm_list:
            if a["id"] == alarm_id:
                a["state"] = "ACKED"
                return dict(a)
        raise KeyError(alarm_id)

    async def shelve(self, alarm_id: str, minutes: int) -> dict[str, Any]:
        self._check()
        for a in self.alarm_list:
            if a["id"] == alarm_id:
                a["state"] = "SHELVED"
                a["shelved_until"] = time.time() + 60 * minutes
                return dict(a)
        raise KeyError(alarm_id)

    async def unshelve(self, alarm_id: str) -> dict[str, Any]:
        self._check()
        for a in self.alarm_list:
            if a["id"] == alarm_id:
                a["state"] = "UNACKED"
                a.pop("shelved_until", None)
                return dict(a)
        raise KeyError(alarm_id)

    async def events(self, since: float | None = None, limit: int = 100, **kw: Any) -> list[dict[str, Any]]:
        self._check()
        return [{"id": f"e{i}", "time": self.t0 - 10 * i, "node": self.node_ids[i % len(self.node_ids)],
                 "severity": ["INFO", "WARNING"][i % 2], "event": ["BOOT", "LINK_UP", "MODE_CHANGE"][i % 3],
                 "text": f"fake event {i}"} for i in range(12)]

    async def send_command(self, node: str, command: str, args: dict[str, Any] | None = None, user: str = "",
                           confirm: bool = False, not_before: float | None = None,
                           not_after: float | None = None) -> dict[str, Any]:
        self._check()
        cid = str(next(self._ids))
        c = {"id": cid, "node": node, "command": command, "args": args or {}, "user": user, "stage": "QUEUED",
             "created": time.time()}
        self.cmds[cid] = c
        self.sent.append(c)
        asyncio.get_running_loop().create_task(self._progress(c))
        return {"id": cid, "stage": "QUEUED"}

    async def _progress(self, c: dict[str, Any]) -> None:
        for st in ("SENT", "ACCEPTED", "EXECUTED"):
            await asyncio.sleep(0.3)
            c["stage"] = st
            c["updated"] = time.time()

    async def commands(self) -> list[dict[str, Any]]:
        self._check()
        return [dict(c) for c in self.cmds.values()]

    async def packets(self, node: str, limit: int = 20) -> list[dict[str, Any]]:
        self._check()
        import struct

        from wire import ccsds, defs, timetag

        out = []
        pb = ccsds.PacketBuffer(defs.APID_POWER, defs.POWER_LEN)
        for i in range(min(limit, 5)):
            struct.pack_into(defs.POWER_FMT, pb.buf, 12, 5000, 300, 3950, 120, 8000 + i, 1800, 1200, 0)
            raw = bytes(pb.finish(int(timetag.unix_to_node(time.time())), 0))
            out.append({"node": node, "packet": "POWER", "apid": defs.APID_POWER, "seq": pb.seq - 1, "time": time.time() - i,
                        "hex": raw.hex(), "fields": {"battery_voltage": {"value": 3.95, "unit": "V", "limit": "ok"},
                                                     "battery_soc": {"value": 80.0 + i / 100, "unit": "%", "limit": "ok"}}})
        return out

    async def health(self) -> dict[str, Any]:
        self._check()
        return {"ok": not self.health_reasons, "reasons": list(self.health_reasons), "time": time.time(),
                "parts": {}}

    async def links(self) -> list[dict[str, Any]]:
        self._check()
        return [dict(n["link"], link=n["node"]) for n in await self.nodes()]

    async def seismic(self, node: str, seconds: float = 30) -> dict[str, Any]:
        self._check()
        n = 300
        return {"node": node, "rate": 10.0, "unit": "um/s2",
                "axes": {ax: [math.sin(i / (4 + k)) * math.exp(-i / 200) * 50 for i in range(n)]
                         for k, ax in enumerate("xyz")}}

    async def live(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            self._check()
            await asyncio.sleep(1.0 / self.rate_hz)
            t = time.time()
            n = random.choice(self.node_ids)
            yield {"type": "param", "node": n, "packet": "THERMAL", "field": "electronics_temp",
                   "value": 20 + 3 * math.sin(t / 7), "unit": "degC", "limit": "ok", "time": t}

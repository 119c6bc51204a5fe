"""The simulator side of the sensor bus (docs/sim-protocol.md): one asyncio TCP server
serving every virtual node, newline-delimited JSON both ways.

A node says ``{"hello": id, "boot": n}`` on connect and ``{"mode", "load_w", "heater"}``
on mode changes and every 10 s; the bus hands those to the node's :class:`Station`.  The
runner calls :meth:`SensorBus.broadcast` once per environment step (≥ 1 Hz real time)
with each node's sensors, active quakes, sensor faults and the simulated time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wire import timetag

log = logging.getLogger("sim.sensorbus")


def node_time() -> float:
    """Now, in node clock seconds (since 2000-01-01, host clock): the ``t0`` of quakes."""
    return timetag.unix_to_node(time.time())


@dataclass
class BusPeer:
    """What the bus knows about one node."""

    node: str
    boot: int = -1
    mode: str | None = None
    load_w: float | None = None
    heater: int | None = None
    hellos: int = 0
    messages: int = 0
    last_seen: float = 0.0
    writer: asyncio.StreamWriter | None = None
    faults: dict[str, str] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)  # one-shot messages (clock_jump)

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()


class SensorBus:
    """The sensor-bus server.  ``on_report(node, msg)`` receives every node message."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_report: Callable[[str, dict[str, Any]], None] | None = None):
        self.host = host
        self.port = port
        self.on_report = on_report
        self.peers: dict[str, BusPeer] = {}
        #: node messages the bus could not use, by reason (bad_json, not_object, bad_hello, before_hello)
        self.rejected: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> SensorBus:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=1 << 16)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for w in list(self._conns):
            w.close()
        if self._server:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except (TimeoutError, Exception):
                pass
            self._server = None

    def peer(self, node: str) -> BusPeer:
        if node not in self.peers:
            self.peers[node] = BusPeer(node)
        return self.peers[node]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        peer: BusPeer | None = None
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    self._reject("bad_json", line)
                    continue
                if not isinstance(msg, dict):
                    self._reject("not_object", line)
                    continue
                if "hello" in msg:
                    try:
                        boot = int(msg.get("boot", -1))
                    except (TypeError, ValueError):
                        self._reject("bad_hello", line)
                        continue
                    peer = self.peer(str(msg["hello"]))
                    if peer.writer is not None and peer.writer is not writer:
                        peer.writer.close()
                    peer.writer = writer
                    peer.boot = boot
                    peer.hellos += 1
                if peer is None:
                    self._reject("before_hello", line)
                    continue
                peer.messages += 1
                peer.last_seen = time.monotonic()
                if "mode" in msg:
                    peer.mode = msg.get("mode")
                    peer.load_w = msg.get("load_w", peer.load_w)
                    peer.heater = msg.get("heater", peer.heater)
                if self.on_report:
                    self.on_report(peer.node, msg)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._conns.discard(writer)
            if peer is not None and peer.writer is writer:
                peer.writer = None
            writer.close()

    def _reject(self, reason: str, line: bytes) -> None:
        # counted always, logged the first time per reason (a broken node would flood the log)
        n = self.rejected.get(reason, 0)
        self.rejected[reason] = n + 1
        if not n:
            log.warning("sensor bus: rejected a node message (%s): %r", reason, line[:80])

    def send(self, node: str, msg: dict[str, Any]) -> bool:
        """Queue one message for ``node``; False when it is not connected."""
        peer = self.peers.get(node)
        if peer is None or peer.writer is None or peer.writer.is_closing():
            return False
        try:
            peer.writer.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
        except (ConnectionError, OSError, RuntimeError):
            return False
        return True

    def set_fault(self, node: str, field_name: str, kind: str | None) -> None:
        """Sensor fault ``stuck|noisy|dead`` on ``field_name`` (None clears it); sent with the next step."""
        f = self.peer(node).faults
        if kind:
            f[field_name] = kind
        else:
            f.pop(field_name, None)

    def clock_jump(self, node: str, seconds: float) -> bool:
        """Step the node's clock by ``seconds`` (fault injection)."""
        return self.send(node, {"clock_jump": seconds})

    def broadcast(self, payloads: dict[str, dict[str, Any]]) -> int:
        """Send each connected node its step message (``faults`` added here); returns how many got one."""
        n = 0
        for node, msg in payloads.items():
            peer = self.peers.get(node)
            if peer is None or not peer.connected:
                continue
            msg = dict(msg)
            msg["faults"] = dict(peer.faults)
            if self.send(node, msg):
                n += 1
        return n

"""The Earth–Moon link emulator: one asyncio TCP proxy per node, between the node and
the broker (the node's config points at the proxy).

- **Light time**: every byte is delivered ``delay`` seconds after it was read (default
  1.28 s one way, the mean Earth–Moon light time; 0 for fast tests), in both
  directions, plus optional uniform ``jitter`` (order is kept: a chunk never overtakes
  the previous one).
- **Bandwidth cap**: ``bandwidth`` bytes/s per direction (serialisation delay, so a
  burst queues up like on a real radio link).
- **Cut** (:meth:`LinkProxy.cut`): every connection is reset (RST) at once, bytes in
  flight are lost, and new connections are accepted and reset immediately until
  :meth:`LinkProxy.restore` — to the node that looks like "connected, then dropped at
  the first read or write" (on the unix port a refused port looks the same).
- **Visibility windows / outages**: :class:`Visibility` turns a schedule (periodic
  windows or explicit outages, real seconds from the start) into cut/restore calls.
- **Corruption**: the node→broker stream is framed as MQTT, and :meth:`corrupt` flips
  one byte inside the *payload* of the next N PUBLISH packets (the TM container), so
  the MQTT framing stays valid, the broker delivers the message and the node gets its
  PUBACK, and the ground parser rejects the damaged CCSDS packet (bad CRC) — a packet
  lost in the stream without any journal drop.  ``corrupt_raw`` instead flips a byte
  anywhere in the stream (MQTT framing breaks: the broker drops the connection).
- **Drops** (:meth:`LinkProxy.drop`, ``drop_rate``): the next N (or a random share of the)
  node->broker PUBLISH packets are swallowed and the emulator answers the node's QoS 1
  PUBACK itself, one round trip later, like a relay that acknowledged and then lost them:
  the node forgets them (its journal still has them), the broker never sees them, and the
  ground sees a sequence gap that only a REPLAY can fill.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from dataclasses import dataclass, field

log = logging.getLogger("sim.link")

LIGHT_TIME_S = 1.28  # mean one-way Earth–Moon light time (384,400 km / c)


@dataclass
class LinkStats:
    connections: int = 0
    refused: int = 0  # connections reset because the link was down
    cuts: int = 0
    bytes_up: int = 0  # node -> broker
    bytes_down: int = 0
    publishes: int = 0  # MQTT PUBLISH packets node -> broker
    corrupted: int = 0  # PUBLISH payloads with a flipped byte
    corrupted_raw: int = 0
    dropped: int = 0  # PUBLISH packets swallowed (the emulator acknowledged them)
    lost_bytes: int = 0  # in flight when the link was cut


def _abort(w: asyncio.StreamWriter) -> None:
    try:
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()
    except (OSError, RuntimeError, AttributeError):
        pass


class _MqttFramer:
    """Splits the node->broker byte stream into MQTT packets (fixed header + remaining length)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytearray]:
        self.buf += data
        out = []
        while True:
            b = self.buf
            if len(b) < 2:
                break
            n = 0
            mult = 1
            i = 1
            while True:
                if i >= len(b):
                    return out
                c = b[i]
                n += (c & 0x7F) * mult
                i += 1
                if not c & 0x80:
                    break
                mult *= 128
                if i > 4:  # malformed: pass everything through unframed
                    out.append(bytearray(b))
                    self.buf = bytearray()
                    return out
            if len(b) < i + n:
                break
            out.append(bytearray(b[: i + n]))
            del self.buf[: i + n]
        return out


def _publish_pid(pkt: bytearray) -> int | None:
    """The packet id of a QoS 1/2 MQTT PUBLISH packet (None for QoS 0)."""
    if not (pkt[0] >> 1) & 3:
        return None
    i = 1
    while pkt[i] & 0x80:
        i += 1
    i += 1
    tl = (pkt[i] << 8) | pkt[i + 1]
    i += 2 + tl
    return (pkt[i] << 8) | pkt[i + 1] if i + 2 <= len(pkt) else None


def _publish_payload(pkt: bytearray) -> tuple[int, int] | None:
    """(start, end) of the payload of an MQTT PUBLISH packet, else None."""
    if pkt[0] >> 4 != 3:
        return None
    i = 1
    while pkt[i] & 0x80:
        i += 1
    i += 1
    if i + 2 > len(pkt):
        return None
    tl = (pkt[i] << 8) | pkt[i + 1]
    i += 2 + tl
    if (pkt[0] >> 1) & 3:
        i += 2
    return (i, len(pkt)) if i < len(pkt) else None


class _Pipe:
    """One direction of one connection: delay, jitter, bandwidth, optional MQTT framing."""

    def __init__(self, link: LinkProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool):
        self.link = link
        self.reader = reader
        self.writer = writer
        self.up = up
        self.framer = _MqttFramer() if up and link.mqtt else None
        self.queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self.busy_until = 0.0
        self.last_at = 0.0
        self.pending = 0
        self.peer: _Pipe | None = None  # the other direction (drops answer the node through it)

    def inject(self, data: bytes, delay: float) -> None:
        """Deliver ``data`` ``delay`` seconds from now, in order with what this pipe carries."""
        at = max(time.monotonic() + delay, self.last_at)
        self.last_at = at
        self.pending += len(data)
        self.queue.put_nowait((at, data))

    def _transform(self, data: bytes) -> bytes:
        link = self.link
        if self.framer is None:
            if link._corrupt_raw_next > 0 and data:
                link._corrupt_raw_next -= 1
                b = bytearray(data)
                b[link.rng.randrange(len(b))] ^= link.rng.randrange(1, 256)
                link.stats.corrupted_raw += 1
                return bytes(b)
            return data
        pkts = self.framer.feed(data)
        if not pkts:
            return b""
        kept = []
        for p in pkts:
            span = _publish_payload(p)
            if span is not None and (link._drop_next > 0 or (link.drop_rate and link.rng.random() < link.drop_rate)):
                link.stats.publishes += 1
                link._drop_next = max(0, link._drop_next - 1)
                link.stats.dropped += 1
                pid = _publish_pid(p)
                if pid is not None and self.peer is not None:  # the node's PUBACK, one round trip later
                    self.peer.inject(bytes((0x40, 2, pid >> 8, pid & 0xFF)), 2 * link.delay)
                continue
            kept.append(p)
            if span is not None:
                link.stats.publishes += 1
                if link._corrupt_next > 0 or (link.corrupt_rate and link.rng.random() < link.corrupt_rate):
                    if link._corrupt_next > 0:
                        link._corrupt_next -= 1
                    k = link.rng.randrange(span[0], span[1])
                    p[k] ^= link.rng.randrange(1, 256)
                    link.stats.corrupted += 1
        out = b"".join(kept)
        if link._corrupt_raw_next > 0 and out:
            link._corrupt_raw_next -= 1
            b = bytearray(out)
            b[link.rng.randrange(len(b))] ^= link.rng.randrange(1, 256)
            link.stats.corrupted_raw += 1
            out = bytes(b)
        return out

    async def read_loop(self) -> None:
        link = self.link
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                if self.up:
                    link.stats.bytes_up += len(data)
                else:
                    link.stats.bytes_down += len(data)
                data = self._transform(data)
                if not data:
                    continue
                now = time.monotonic()
                at = now
                if link.bandwidth:
                    start = max(now, self.busy_until)
                    self.busy_until = start + len(data) / link.bandwidth
                    at = self.busy_until
                at += link.delay + (link.rng.uniform(0, link.jitter) if link.jitter else 0.0)
                at = max(at, self.last_at)
                self.last_at = at
                if at <= now and self.pending == 0 and self.queue.empty():
                    self.writer.write(data)
                    if self.writer.transport.get_write_buffer_size() > 1 << 20:
                        await self.writer.drain()
                else:
                    self.pending += len(data)
                    self.queue.put_nowait((at, data))
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.queue.put_nowait(None)

    async def write_loop(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    break
                at, data = item
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.pending -= len(data)
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # the source closed: close the destination once everything was delivered
            try:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
            except (OSError, RuntimeError):
                pass


class LinkProxy:
    """A TCP proxy emulating the Earth–Moon link for one node."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        delay: float = LIGHT_TIME_S,
        jitter: float = 0.0,
        bandwidth: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        name: str = "link",
        mqtt: bool = True,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.jitter = jitter
        self.bandwidth = bandwidth
        self.host = host
        self.port = port
        self.name = name
        self.mqtt = mqtt  # frame node->broker bytes as MQTT (needed for payload corruption)
        self.rng = random.Random(f"{seed}:link:{name}")
        self.up = True
        self.stats = LinkStats()
        self.corrupt_rate = 0.0
        self._corrupt_next = 0
        self.drop_rate = 0.0  # share of PUBLISH packets dropped (and acknowledged to the node)
        self._drop_next = 0
        self._corrupt_raw_next = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.down_since: float | None = None

    async def start(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        self._drop_all()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server = None

    # -- control -------------------------------------------------------------------------
    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`restore`."""
        if self.up:
            self.stats.cuts += 1
            self.down_since = time.monotonic()
        self.up = False
        self._drop_all()

    def restore(self) -> None:
        self.up = True
        self.down_since = None

    def corrupt(self, count: int = 1) -> None:
        """Flip one byte in the payload of each of the next ``count`` PUBLISH packets."""
        self._corrupt_next += count

    def drop(self, count: int = 1) -> None:
        """Swallow the next ``count`` PUBLISH packets, acknowledging them to the node (see the module)."""
        self._drop_next += count

    def corrupt_raw(self, count: int = 1) -> None:
        """Flip one byte anywhere in the next ``count`` node->broker chunks (breaks MQTT framing)."""
        self._corrupt_raw_next += count

    def _drop_all(self) -> None:
        for a, b in list(self._conns):
            _abort(a)
            if b is not None:
                _abort(b)
        self._conns.clear()

    # -- data path ---------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.stats.refused += 1
            _abort(writer)
            return
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 5)
        except (TimeoutError, OSError):
            _abort(writer)  # broker down: the node sees the same as a refused connection
            return
        if not self.up:
            _abort(writer)
            _abort(uw)
            return
        self.stats.connections += 1
        pair = (writer, uw)
        self._conns.add(pair)
        up = _Pipe(self, reader, uw, up=True)
        down = _Pipe(self, ur, writer, up=False)
        up.peer = down
        tasks = [asyncio.create_task(c) for c in (up.read_loop(), up.write_loop(), down.read_loop(), down.write_loop())]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            self.stats.lost_bytes += max(0, up.pending) + max(0, down.pending)
            self._conns.discard(pair)
            for w in (writer, uw):
                try:
                    w.close()
                except (OSError, RuntimeError):
                    pass


@dataclass
class Visibility:
    """When the link is up, in real seconds from the start of a run.

    ``period``/``visible``: periodic relay windows (up for ``visible`` s out of every
    ``period`` s, starting visible); ``outages``: explicit (start, duration) cuts.
    """

    period: float | None = None
    visible: float | None = None
    outages: list[tuple[float, float]] = field(default_factory=list)

    def is_up(self, t: float) -> bool:
        if self.period and self.visible is not None and (t % self.period) >= self.visible:
            return False
        return not any(s <= t < s + d for s, d in self.outages)

    async def drive(self, link: LinkProxy, t0: float | None = None, tick: float = 0.05) -> None:
        """Cut and restore ``link`` on schedule until cancelled."""
        t0 = time.monotonic() if t0 is None else t0
        while True:
            want = self.is_up(time.monotonic() - t0)
            if want and not link.up:
                link.restore()
            elif not want and link.up:
                link.cut()
            await asyncio.sleep(tick)

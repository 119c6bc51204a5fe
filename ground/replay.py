"""Replay a time range of the raw archive as if it were live.

The raw log is read in reception order; consecutive packets of one node received in the
same ingest batch become one container (one MQTT message), and the gaps between
reception times are reproduced, divided by ``speed`` (None = as fast as possible).

Targets: ``to_broker`` publishes to ``lunabase/<site>/<node>/tm`` (a second ground, a
test bench; a ground ingesting into the *same* archive would drop everything as
duplicates), ``to_pipeline`` feeds an ingest Pipeline (another archive), ``to_sinks``
calls IngestSink.on_packets directly (consoles, alarm tests) with every packet fresh.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ground.archive import Archive
from ground.ingest import IngestSink, Pipeline
from ground.parse import Parser
from wire import topics

log = logging.getLogger("lunabase.replay")


@dataclass(frozen=True)
class Container:
    """One replayed message: packets of one node back to back, with their reception time."""

    received: float
    site: str
    node: str
    data: bytes
    packets: int


class Replayer:
    """Reads [t0, t1) of reception time (Unix s) from the archive, in chunks."""

    def __init__(self, archive: Archive, t0: float | None = None, t1: float | None = None,
                 speed: float | None = 1.0, node: str | None = None, site: str | None = None,
                 apid: int | None = None, max_container: int = 64, chunk: int = 20000) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be > 0 (or None for as fast as possible), got {speed}")
        self.archive = archive
        self.t0, self.t1 = t0, t1
        self.speed = speed
        self.node, self.site, self.apid = node, site, apid
        self.max_container = max_container
        self.chunk = chunk

    def containers(self) -> Iterator[Container]:
        t0 = self.t0
        cur: list[bytes] = []
        key: tuple[str, str, float] | None = None
        seen_at_t0: set[tuple[str, str, int, int, int]] = set()
        while True:
            rows = self.archive.raw_packets(node=self.node, apid=self.apid, site=self.site, t0=t0, t1=self.t1,
                                            by_received=True, limit=self.chunk)
            fresh_rows = [r for r in rows if (r.site, r.node, r.apid, r.ticks, r.seq) not in seen_at_t0]
            if not fresh_rows:
                break
            for r in fresh_rows:
                k = (r.site, r.node, r.received)
                if key is not None and (k != key or len(cur) >= self.max_container):
                    yield Container(key[2], key[0], key[1], b"".join(cur), len(cur))
                    cur = []
                key = k
                cur.append(r.data)
            if len(rows) < self.chunk:
                break
            # continue from the last reception time; skip what that instant already gave
            t0 = rows[-1].received
            seen_at_t0 = {(r.site, r.node, r.apid, r.ticks, r.seq) for r in rows if r.received == t0}
        if cur and key is not None:
            yield Container(key[2], key[0], key[1], b"".join(cur), len(cur))

    async def _paced(self) -> AsyncIterator[Container]:
        start = time.monotonic()
        first: float | None = None
        for c in self.containers():
            if self.speed is not None:
                if first is None:
                    first = c.received
                due = start + (c.received - first) / self.speed
                d = due - time.monotonic()
                if d > 0:
                    await asyncio.sleep(d)
            yield c

    async def to_broker(self, host: str, port: int, username: str | None = None, password: str | None = None,
                        tls: ssl.SSLContext | None = None, qos: int = 1, client_id: str = "lunabase-replay") -> int:
        """Publish every container to its node's tm topic; returns packets sent."""
        import aiomqtt

        n = 0
        async with aiomqtt.Client(host, port, username=username, password=password, identifier=client_id,
                                  tls_context=tls) as client:
            log.info("replaying to %s:%d at %s", host, port, f"{self.speed}x" if self.speed else "max speed")
            async for c in self._paced():
                await client.publish(topics.topic(c.site, c.node, topics.TM), c.data, qos=qos)
                n += c.packets
        return n

    async def to_pipeline(self, pipeline: Pipeline, batch: int = 200) -> int:
        """Feed the containers through an ingest Pipeline (reception time = now)."""
        n = 0
        buf: list[tuple[str, bytes, float]] = []
        async for c in self._paced():
            buf.append((topics.topic(c.site, c.node, topics.TM), c.data, time.time()))
            n += c.packets
            if len(buf) >= batch or self.speed is not None:
                pipeline.process(buf)
                buf = []
        if buf:
            pipeline.process(buf)
        return n

    async def to_sinks(self, sinks: Iterable[IngestSink], parser: Any = None) -> int:
        """Call on_packets of each sink for every container (all packets fresh)."""
        p = parser or Parser(self.archive.dictionary)
        sinks = list(sinks)
        n = 0
        async for c in self._paced():
            res = p.parse(c.data)
            fresh = np.ones(res.count, dtype=bool)
            for s in sinks:
                s.on_packets(c.site, c.node, res, fresh, time.time())
            n += res.count
        return n

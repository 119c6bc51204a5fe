"""The transport-independent half of ingest: parse, de-duplicate, archive, count, notify.

``Pipeline.process(batch)`` takes (topic, payload, received) triples, parses every TM
payload, writes all of them in ONE archive transaction, then updates counters and gap
trackers and calls the sinks.  The MQTT worker acknowledges the batch only after
``process`` returned; replay and tests call ``process`` directly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ground.archive import Archive
from ground.archive._base import packet_crcs
from ground.ingest._stats import Gap, LinkStats, RecentKeys
from ground.parse import Parser, ParseResult, Rejected
from wire import topics

log = logging.getLogger("lunabase.ingest")

#: ingest-level reasons, next to the parser's (ground.parse.REASONS)
OVERSIZED = "oversized"  # payload larger than max_payload: not parsed at all
BAD_STATUS = "bad_status"  # status payload that is not a JSON object
BAD_TOPIC = "bad_topic"  # topic outside lunabase/<site>/<node>/{tm,status}
EMPTY = "empty"  # zero-length TM payload

DEFAULT_MAX_PAYLOAD = 256 * 1024


@runtime_checkable
class IngestSink(Protocol):
    """What the ops layer (alarms, liveness, live clients) receives from ingest.

    Every call happens after the archive transaction holding the data committed, in
    arrival order, on the ingest's event-loop thread: keep the work short (queue it).
    ``fresh[i]`` is False for packet i of ``result`` when it was a duplicate (already
    archived, e.g. a QoS 1 redelivery); limits should look at fresh packets only.
    Exceptions raised by a sink are logged and counted (``totals.sink_errors``), never
    raised into ingest: the data is already committed.
    """

    def on_packets(self, site: str, node: str, result: ParseResult, fresh: np.ndarray, received: float) -> None: ...

    def on_status(self, site: str, node: str, status: dict[str, Any], received: float) -> None: ...

    def on_rejected(self, site: str, node: str, rejected: Sequence[Rejected], payload: bytes) -> None: ...


class Pipeline:
    """Parse -> de-duplicate -> archive (one transaction per batch) -> counters -> sinks."""

    def __init__(self, archive: Archive, sinks: Iterable[IngestSink] = (), parser: Any = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, log_interval_s: float = 10.0) -> None:
        self.archive = archive
        self.sinks: list[IngestSink] = list(sinks)
        self.parser = parser or Parser(archive.dictionary)
        self.max_payload = max_payload
        self.links: dict[tuple[str, str], LinkStats] = {}
        self._recent: dict[tuple[str, str, int], RecentKeys] = {}
        self.gaps: list[Gap] = []  # the most recent gaps opened, all links
        self.started = time.time()
        self.batches = 0
        self.sink_errors: dict[str, int] = {}  # "on_packets"/"on_status"/"on_rejected" -> failures
        self.commits_s = 0.0  # total time spent in archive transactions
        self.log_interval_s = log_interval_s
        self._last_log: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], dict[str, list[int]]] = {}

    # -- counters --------------------------------------------------------------------
    def link(self, site: str, node: str) -> LinkStats:
        st = self.links.get((site, node))
        if st is None:
            st = self.links[(site, node)] = LinkStats(site, node)
        return st

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of every counter: {"links": {"site/node": {...}}, "totals": {...}}."""
        now = time.time()
        links = {f"{s}/{n}": st.snapshot(now) for (s, n), st in sorted(self.links.items())}
        tot: dict[str, Any] = {k: 0 for k in ("messages", "packets", "fresh", "bytes", "duplicates", "collisions", "gaps",
                                               "missing", "status_messages", "rejected_bytes")}
        tot["packets_per_s"] = tot["bytes_per_s"] = 0.0
        errors: dict[str, dict[str, int]] = {}
        for d in links.values():
            for k in tot:
                tot[k] += d[k]
            for r, e in d["errors"].items():
                agg = errors.setdefault(r, {"count": 0, "bytes": 0})
                agg["count"] += e["count"]
                agg["bytes"] += e["bytes"]
        tot["errors"] = errors
        tot["batches"] = self.batches
        tot["sink_errors"] = dict(self.sink_errors)
        tot["uptime_s"] = now - self.started
        return {"links": links, "totals": tot, "recent_gaps": [g.to_dict() for g in self.gaps[-50:]]}

    # -- the batch -------------------------------------------------------------------
    def process(self, batch: Sequence[tuple[str, bytes, float]]) -> None:
        """Parse and archive a batch of (topic, payload, received) in one transaction.

        Raises only if the archive fails (then nothing of the batch is committed and the
        caller must not acknowledge it).  Bad payloads are counted, never raised.
        """
        # group TM payloads by link (order kept within a link): one parse per link per batch
        groups: dict[tuple[str, str], tuple[LinkStats, list[bytes], float]] = {}
        status: list[tuple[LinkStats, dict[str, Any], float]] = []
        rejects: list[tuple[LinkStats, list[Rejected], bytes]] = []
        for topic, payload, received in batch:
            parts = topics.split(topic)
            if parts is None or parts[2] not in (topics.TM, topics.STATUS):
                st = self.link("?", topic[:64])
                st.messages += 1
                rejects.append((st, [Rejected(0, len(payload), BAD_TOPIC)], payload))
                continue
            site, node, kind = parts
            st = self.links.get((site, node)) or self.link(site, node)
            st.messages += 1
            st.bytes += len(payload)
            st.last_contact = received
            if kind == topics.STATUS:
                try:
                    body = json.loads(payload)
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except (ValueError, UnicodeDecodeError):
                    rejects.append((st, [Rejected(0, len(payload), BAD_STATUS)], payload))
                    continue
                status.append((st, body, received))
                continue
            if len(payload) > self.max_payload:
                rejects.append((st, [Rejected(0, len(payload), OVERSIZED)], payload))
                continue
            if not payload:
                rejects.append((st, [Rejected(0, 0, EMPTY)], payload))
                continue
            g = groups.get((site, node))
            if g is None:
                groups[(site, node)] = (st, [payload], received)
            else:
                g[1].append(payload)

        tm: list[tuple[LinkStats, ParseResult, bytes, float]] = []
        for st, payloads, received in groups.values():
            for res, payload in self._parse(payloads):
                if res.rejected:
                    rejects.append((st, list(res.rejected), payload))
                if res.count:
                    tm.append((st, res, payload, received))

        t0 = time.perf_counter()
        fresh_masks: list[np.ndarray] = []
        collided: list[int] = [0] * len(tm)
        if tm or status:
            items = [(st.site, st.node, res, payload, received, self._known_fresh(st.site, st.node, res, payload))
                     for st, res, payload, received in tm]
            with self.archive.transaction() as tx:
                if items:
                    fresh_masks = tx.append_many(items)
                    collided = list(getattr(tx, "collisions", None) or [0] * len(items))
                for st, body, received in status:
                    tx.append_status(st.site, st.node, body, received)
        self.commits_s += time.perf_counter() - t0
        self.batches += 1

        # committed: now the in-memory state and the sinks
        now = time.time()
        for (st, res, payload, received), fresh, ncoll in zip(tm, fresh_masks, collided, strict=False):
            nfresh = st.count_packets(res, fresh, received, ncoll)
            if ncoll:
                log.warning("%s/%s: %d packet(s) with the key of an archived packet but other bytes: kept in"
                            " the archive's collisions (%s)", st.site, st.node, ncoll, "key_collision")
            self._track(st, res, payload, fresh, nfresh == res.count, now)
            for sink in self.sinks:
                try:
                    sink.on_packets(st.site, st.node, res, fresh, received)
                except Exception:
                    self._sink_failed("on_packets", sink)
        for st, body, received in status:
            st.status_messages += 1
            for sink in self.sinks:
                try:
                    sink.on_status(st.site, st.node, body, received)
                except Exception:
                    self._sink_failed("on_status", sink)
        for st, rej, payload in rejects:
            for r in rej:
                st.count_error(r.reason, r.end - r.start)
            self._log_rejects(st, rej, payload, now)
            for sink in self.sinks:
                try:
                    sink.on_rejected(st.site, st.node, rej, payload)
                except Exception:
                    self._sink_failed("on_rejected", sink)

    def _sink_failed(self, hook: str, sink: IngestSink) -> None:
        self.sink_errors[hook] = self.sink_errors.get(hook, 0) + 1
        log.exception("sink %r failed in %s (%d failure(s) so far)", sink, hook, self.sink_errors[hook])

    def _parse(self, payloads: list[bytes]) -> list[tuple[ParseResult, bytes]]:
        """Parse one link's payloads of a batch: concatenated in one call when that is exact.

        Packets are self-delimiting, so containers back to back form one container.  The
        joint parse is kept only if it rejected nothing and no packet straddles two
        messages; otherwise each message is parsed alone, so rejected ranges stay
        relative to the message they came from.
        """
        parse = self.parser.parse
        if len(payloads) == 1:
            return [(parse(payloads[0]), payloads[0])]
        joined = b"".join(payloads)
        res = parse(joined)
        if not res.rejected:
            ends = np.cumsum([len(p) for p in payloads])
            first = np.searchsorted(ends, res.offset, side="right")
            last = np.searchsorted(ends, res.offset + res.length - 1, side="right")
            if np.array_equal(first, last):
                return [(res, joined)]
        return [(parse(p), p) for p in payloads]

    def _known_fresh(self, site: str, node: str, res: ParseResult, payload: bytes) -> np.ndarray | None:
        """False for packets the recent window has already archived (same key and CRC)."""
        mask = None
        crc = None
        if any((site, node, apid) in self._recent for apid in res.tables):
            crc = packet_crcs(res, payload)
        for apid in res.tables:
            rk = self._recent.get((site, node, apid))
            if rk is None:
                continue
            rows = res.tables[apid].rows
            seen = rk.seen(res.ticks[rows], res.seq[rows], crc[rows] if crc is not None else None)
            if seen is not None and seen.any():
                if mask is None:
                    mask = np.ones(res.count, dtype=bool)
                mask[rows[seen]] = False
        return mask

    def _track(self, st: LinkStats, res: ParseResult, payload: bytes, fresh: np.ndarray, all_fresh: bool,
               now: float) -> None:
        crc = packet_crcs(res, payload)
        for apid, tab in res.tables.items():
            rows = tab.rows if all_fresh else tab.rows[fresh[tab.rows]]
            if not len(rows):
                continue
            key = (st.site, st.node, apid)
            rk = self._recent.get(key)
            if rk is None:
                rk = self._recent[key] = RecentKeys()
            seq, ticks = res.seq[rows], res.ticks[rows]
            rk.add(ticks, seq, crc[rows])
            for g in st.track(apid, seq, ticks, now):
                log.warning("%s/%s APID %d: sequence gap, %d packet(s) missing from seq %d",
                            st.site, st.node, apid, g.count, g.first)
                self.gaps.append(g)
            if len(self.gaps) > 1000:
                del self.gaps[:-500]

    def _log_rejects(self, st: LinkStats, rej: list[Rejected], payload: bytes, now: float) -> None:
        key = (st.site, st.node)
        acc = self._unlogged.setdefault(key, {})
        for r in rej:
            a = acc.setdefault(r.reason, [0, 0])
            a[0] += 1
            a[1] += r.end - r.start
        if now - self._last_log.get(key, 0.0) < self.log_interval_s:
            return
        self._last_log[key] = now
        summary = ", ".join(f"{reason} x{c} ({b} B)" for reason, (c, b) in sorted(acc.items()))
        first = rej[0]
        log.warning("%s/%s: rejected %s; e.g. bytes %d-%d of a %d-byte payload: %s", st.site, st.node, summary,
                    first.start, first.end, len(payload), payload[first.start:min(first.end, first.start + 16)].hex())
        acc.clear()

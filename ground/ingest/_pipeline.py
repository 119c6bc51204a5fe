"""The transport-independent half of ingest: parse, de-duplicate, archive, count, notify.

``Pipeline.process(batch)`` takes (topic, payload, received[, retained]) items, parses every TM
payload, writes all of them in ONE archive transaction, then updates counters and gap
trackers and calls the sinks.  The MQTT worker acknowledges the batch only after
``process`` returned; replay and tests call ``process`` directly.

Nothing a message holds can stop the messages after it.  A message ingest cannot accept
whole (a topic outside the scheme, an unknown node, an oversized or empty payload, a
status that is not a small, shallow JSON object of the expected types, or *any*
exception while handling it) is **quarantined**: counted by reason, kept in the
archive's ``quarantine`` table with its topic, the reason and the first
``SAMPLE_BYTES`` of its payload (at most ``quarantine_per_min`` stored per reason a
minute, the rest only counted), logged at most every ``log_interval_s`` per reason,
reported to the sinks, and acknowledged like any other message.  ``process`` raises only
when the archive itself fails (then nothing of the batch was committed and the caller
must not acknowledge it): a batch that fails is retried message by message, so one
message that makes the archive (or the parser) raise is quarantined alone and the rest
are archived.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ground.archive import Archive
from ground.archive._base import packet_crcs
from ground.ingest._stats import Gap, LinkStats, RecentKeys
from ground.parse import Parser, ParseResult, Rejected
from ground.ratelog import RateLimitedLog
from wire import topics
from wire.inventory import NODE_ID

log = logging.getLogger("lunabase.ingest")

#: one message: (topic, payload, received) or (topic, payload, received, retained), where
#: ``retained`` is the MQTT retain flag as delivered (a retained message replayed by the
#: broker on our subscription, not one published now)
Item = tuple[str, bytes, float] | tuple[str, bytes, float, bool]
#: the key a status handed to the sinks (and archived) carries when it was such a replay
RETAINED = "_retained"

#: ingest-level reasons, next to the parser's (ground.parse.REASONS); each is a quarantine reason
OVERSIZED = "oversized"  # payload larger than max_payload (TM) or max_status (status): not parsed at all
BAD_STATUS = "bad_status"  # status payload that is not a JSON object of the expected field types
TOO_DEEP = "too_deep"  # status JSON nested deeper than max_depth
BAD_TOPIC = "bad_topic"  # topic outside lunabase/<site>/<node>/{tm,status}
UNKNOWN_NODE = "unknown_node"  # a node the pipeline was not told about (or beyond max_links)
EMPTY = "empty"  # zero-length TM payload
INTERNAL = "internal_error"  # an exception while handling the message (parser, archive, ...)
QUARANTINE_REASONS = (OVERSIZED, BAD_STATUS, TOO_DEEP, BAD_TOPIC, UNKNOWN_NODE, EMPTY, INTERNAL)

DEFAULT_MAX_PAYLOAD = 256 * 1024
DEFAULT_MAX_STATUS = 16 * 1024
DEFAULT_MAX_DEPTH = 8
MAX_TOPIC = 128  # characters; a valid topic is at most 4 + 1 + 32 + 1 + 32 + 1 + 6
SAMPLE_BYTES = 256  # of a quarantined payload kept in the archive
UNKNOWN = ("?", "?")  # the one link entry every bad topic and unknown node is counted under

#: status fields the ground reads, with their accepted types and ranges (others: any JSON)
_STATUS_STR = {"state": 32, "mode": 32, "fw": 64, "via": 64, "reason": 256}
_STATUS_NUM = {"boot": (0, 2**32), "hk_period": (0, 30 * 86400), "next_contact": (0, 2**32), "dict_crc": (0, 2**32),
               "journal_bytes": (0, 2**40)}


class Quarantined(ValueError):
    """Why a message is not accepted: ``reason`` (one of QUARANTINE_REASONS) and a detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_status(payload: bytes, max_size: int = DEFAULT_MAX_STATUS, max_depth: int = DEFAULT_MAX_DEPTH
                 ) -> dict[str, Any]:
    """The status JSON object in ``payload``; ``Quarantined`` when it is not acceptable.

    Acceptable: at most ``max_size`` bytes of UTF-8, a JSON object nested at most
    ``max_depth`` deep, every string free of NUL and lone surrogates (they cannot be
    stored), no NaN/Infinity, and the fields the ground reads of the right type
    (``state``/``mode``/``fw``: short strings; ``boot``/``hk_period``/``next_contact``:
    finite non-negative numbers).
    """
    if len(payload) > max_size:
        raise Quarantined(OVERSIZED, f"status of {len(payload)} B > {max_size} B")
    if _depth_exceeds(payload, max_depth):
        raise Quarantined(TOO_DEEP, f"JSON nested deeper than {max_depth}")
    try:
        body = json.loads(bytes(payload).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise Quarantined(BAD_STATUS, f"not JSON: {str(e)[:120]}") from None
    if not isinstance(body, dict):
        raise Quarantined(BAD_STATUS, f"a JSON {type(body).__name__}, not an object")
    _check_strings(body)
    for k, n in _STATUS_STR.items():
        v = body.get(k)
        if v is not None and not (isinstance(v, str) and len(v) <= n and v.isprintable()):
            raise Quarantined(BAD_STATUS, f"{k!r} must be a printable string of at most {n} characters")
    for k, (lo, hi) in _STATUS_NUM.items():
        v = body.get(k)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) and lo <= v <= hi):
            raise Quarantined(BAD_STATUS, f"{k!r} must be a number in [{lo}, {hi}]")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth_exceeds(payload: bytes, limit: int) -> bool:
    """True when the JSON text nests brackets deeper than ``limit`` (strings skipped), without parsing."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth = 0
    in_str = esc = False
    for c in payload:
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif c in (0x5D, 0x7D):
            depth -= 1
    return False


def _check_strings(o: Any) -> None:
    stack = [o]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                _check_str(k)
                stack.append(v)
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str):
            _check_str(x)


def _check_str(s: str) -> None:
    if "\x00" in s:
        raise Quarantined(BAD_STATUS, "a string holds NUL")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise Quarantined(BAD_STATUS, "a string holds a lone surrogate") from None


def archive_trouble(e: BaseException) -> bool:
    """True when ``e`` says the archive (disk, server, connection) failed, not the data.

    Then the batch must stay unacknowledged and be retried.  Any other exception while
    handling a batch is blamed on a message in it (e.g. a value the database refuses),
    which is found by retrying message by message and quarantined.
    """
    from ground.archive import ArchiveError

    if isinstance(e, (OSError, ArchiveError, MemoryError)):
        return True
    # sqlite3.OperationalError (disk full, I/O error, locked), psycopg.OperationalError
    # (server gone) and their kin, matched by name so psycopg stays an optional import
    return any(c.__name__ in ("OperationalError", "InterfaceError", "InternalError") for c in type(e).__mro__)


@runtime_checkable
class IngestSink(Protocol):
    """What the ops layer (alarms, liveness, live clients) receives from ingest.

    Every call happens after the archive transaction holding the data committed, in
    arrival order, on the ingest's event-loop thread: keep the work short (queue it).
    ``fresh[i]`` is False for packet i of ``result`` when it was a duplicate (already
    archived, e.g. a QoS 1 redelivery); limits should look at fresh packets only.
    Exceptions raised by a sink are counted (``totals.sink_errors``) and logged at most
    every ``log_interval_s`` per hook, never raised into ingest: the data is already
    committed.  A sink may also define ``on_quarantined(topic, reason, detail, received)``
    (optional) to hear of every quarantined message.  A sink whose ``fresh_to_me`` is true
    gets ``fresh`` as *new to this process* instead (only its own recent window's
    duplicates false): the ops layer of one of several grounds sharing an archive must
    see the packets the other ground archived first.
    """

    def on_packets(self, site: str, node: str, result: ParseResult, fresh: np.ndarray, received: float) -> None: ...

    def on_status(self, site: str, node: str, status: dict[str, Any], received: float) -> None: ...

    def on_rejected(self, site: str, node: str, rejected: Sequence[Rejected], payload: bytes) -> None: ...


class Pipeline:
    """Parse -> de-duplicate -> archive (one transaction per batch) -> counters -> sinks.

    ``known``: the (site, node) pairs to accept (e.g. the inventory's); None accepts any
    node with a valid name, up to ``max_links`` link entries.  Messages of other nodes are
    quarantined as ``unknown_node`` and counted under the one ``?/?`` link.
    """

    def __init__(self, archive: Archive, sinks: Iterable[IngestSink] = (), parser: Any = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, log_interval_s: float = 10.0, *,
                 known: Collection[tuple[str, str]] | None = None, max_links: int = 4096,
                 max_status: int = DEFAULT_MAX_STATUS, max_depth: int = DEFAULT_MAX_DEPTH,
                 quarantine_per_min: int = 60) -> None:
        self.archive = archive
        self.sinks: list[IngestSink] = list(sinks)
        self.parser = parser or Parser(archive.dictionary)
        self.max_payload = max_payload
        self.max_status = max_status
        self.max_depth = max_depth
        self.known = None if known is None else frozenset(known)
        self.max_links = max_links
        self.quarantine_per_min = quarantine_per_min
        self.links: dict[tuple[str, str], LinkStats] = {}
        self._recent: dict[tuple[str, str, int], RecentKeys] = {}
        self.gaps: list[Gap] = []  # the most recent gaps opened, all links
        self.started = time.time()
        self.batches = 0
        self.sink_errors: dict[str, int] = {}  # "on_packets"/"on_status"/"on_rejected" -> failures
        self.commits_s = 0.0  # total time spent in archive transactions
        self.last_commit: float | None = None  # time.time() of the last batch committed
        self.failed_batches = 0  # batches that raised (the archive failed): not acknowledged
        self.isolated_batches = 0  # batches retried message by message after an exception
        self.last_error: str | None = None  # the last archive failure, "Type: message"
        self.quarantine: dict[str, int] = {}  # reason -> messages quarantined
        self.quarantine_stored = 0  # of them, kept in the archive (the rest only counted)
        self.recent_quarantine: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._q_window: dict[str, list[float]] = {}  # reason -> [minute start, stored in it]
        self.log_interval_s = log_interval_s
        self.rlog = RateLimitedLog(log, log_interval_s)
        self._last_log: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], dict[str, list[int]]] = {}

    # -- counters --------------------------------------------------------------------
    def link(self, site: str, node: str) -> LinkStats:
        st = self.links.get((site, node))
        if st is None:
            st = self.links[(site, node)] = LinkStats(site, node)
        return st

    def snapshot(self, archive_gaps: bool = True) -> dict[str, Any]:
        """A plain dict of every counter: {"links": {"site/node": {...}}, "totals": {...}, "quarantine": {...},
        "archive_gaps": {"site/node": {...}}}.

        A link's "gaps"/"missing" count this pipeline's own stream; with several workers of a
        shared subscription each sees only part of a node's sequence, so the account that
        holds is "archive_gaps" (``Archive.gap_summary``: every worker's commits; skipped
        with ``archive_gaps=False``)."""
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
        tot["last_commit"] = self.last_commit
        tot["failed_batches"] = self.failed_batches
        tot["isolated_batches"] = self.isolated_batches
        tot["last_error"] = self.last_error
        quarantine = {"by_reason": dict(self.quarantine), "total": sum(self.quarantine.values()),
                      "stored": self.quarantine_stored, "recent": list(self.recent_quarantine)[-10:],
                      "log_suppressed": sum(self.rlog.suppressed.values())}
        out = {"links": links, "totals": tot, "quarantine": quarantine,
               "recent_gaps": [g.to_dict() for g in self.gaps[-50:]]}
        if archive_gaps:
            try:
                out["archive_gaps"] = {f"{s}/{n}": d for (s, n), d in self.archive.gap_summary(now_=now).items()}
            except Exception as e:
                out["archive_gaps"] = {"error": f"{type(e).__name__}: {e}"[:200]}
        return out

    # -- the batch -------------------------------------------------------------------
    def process(self, batch: Sequence[Item]) -> None:
        """Parse and archive a batch of (topic, payload, received) in one transaction.

        Raises only if the archive fails (then nothing of the batch is committed and the
        caller must not acknowledge it).  Bad messages are quarantined, never raised.
        """
        try:
            self._process(batch)
            return
        except Exception as e:  # isolate: find the message, or prove the archive broken
            if archive_trouble(e):
                self.failed_batches += 1
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                raise
            first = e
        if len(batch) > 1:
            self.isolated_batches += 1
            self.rlog.warning("isolate", "ingest batch of %d failed (%s: %s): retrying message by message",
                              len(batch), type(first).__name__, first)
            for item in batch:
                self.process([item])
            return
        topic, payload, received = batch[0][0], batch[0][1], batch[0][2]
        self._quarantine_alone(topic, payload, received, INTERNAL, f"{type(first).__name__}: {first}")

    def _process(self, batch: Sequence[Item]) -> None:
        # group TM payloads by link (order kept within a link): one parse per link per batch
        groups: dict[tuple[str, str], tuple[LinkStats, list[bytes], float]] = {}
        status: list[tuple[LinkStats, dict[str, Any], float]] = []
        rejects: list[tuple[LinkStats, list[Rejected], bytes]] = []
        quarantined: list[tuple[LinkStats, str, bytes, float, Quarantined]] = []
        seen: list[tuple[LinkStats, int, float]] = []  # (link, bytes, received) of every message
        for item in batch:
            topic, payload, received = item[0], item[1], item[2]
            st: LinkStats | None = None
            try:
                site, node, kind = self._route(topic)
                st = self.links.get((site, node)) or self.link(site, node)
                if kind == topics.STATUS:
                    body = check_status(payload, self.max_status, self.max_depth)
                    body.pop(RETAINED, None)  # the ground's mark, never the node's
                    if len(item) > 3 and item[3]:
                        body[RETAINED] = True  # a replay: the sinks must not take it for a contact now
                    status.append((st, body, received))
                elif len(payload) > self.max_payload:
                    raise Quarantined(OVERSIZED, f"{len(payload)} B > {self.max_payload} B")
                elif not payload:
                    raise Quarantined(EMPTY, "zero-length telemetry")
                else:
                    g = groups.get((site, node))
                    if g is None:
                        groups[(site, node)] = (st, [payload], received)
                    else:
                        g[1].append(payload)
                seen.append((st, len(payload), received))
            except Quarantined as q:
                st = st or self.link(*UNKNOWN)
                quarantined.append((st, topic, payload, received, q))
            except Exception as e:  # whatever it is, it concerns this message only
                st = st or self.link(*UNKNOWN)
                quarantined.append((st, topic, payload, received, Quarantined(INTERNAL, f"{type(e).__name__}: {e}")))

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
        stored: list[bool] = [self._sample_quota(q.reason, received) for _st, _t, _p, received, q in quarantined]
        items: list[Any] = []
        if tm or status or any(stored):
            items = [(st.site, st.node, res, payload, received, self._known_fresh(st.site, st.node, res, payload))
                     for st, res, payload, received in tm]
            with self.archive.transaction() as tx:
                if items:
                    fresh_masks = tx.append_many(items)
                    collided = list(getattr(tx, "collisions", None) or [0] * len(items))
                for st, body, received in status:
                    tx.append_status(st.site, st.node, body, received)
                for (_st, topic, payload, received, q), keep in zip(quarantined, stored, strict=True):
                    if keep:
                        tx.append_quarantine(received, str(topic), q.reason, len(payload), q.detail,
                                             bytes(payload[:SAMPLE_BYTES]))
            self.last_commit = time.time()
        self.commits_s += time.perf_counter() - t0
        self.batches += 1

        # committed: now the in-memory state and the sinks; nothing below may raise into
        # the caller (that would make it retry, i.e. count, what is already archived)
        now = time.time()
        for st, nbytes, received in seen:
            st.messages += 1
            st.bytes += nbytes
            st.last_contact = max(st.last_contact, received)
        known = [it[5] for it in items]
        for (st, res, payload, received), fresh, ncoll, kn in zip(tm, fresh_masks, collided, known, strict=False):
            try:
                nfresh = st.count_packets(res, fresh, received, ncoll)
                if ncoll:
                    log.warning("%s/%s: %d packet(s) with the key of an archived packet but other bytes: kept in"
                                " the archive's collisions (%s)", st.site, st.node, ncoll, "key_collision")
                self._track(st, res, payload, fresh, nfresh == res.count, now)
            except Exception:  # counters only; the packets are archived
                self.sink_errors["counters"] = self.sink_errors.get("counters", 0) + 1
                self.rlog.error("counters", "ingest counters failed for %s/%s", st.site, st.node, exc_info=True)
            mine = None  # fresh to this process (another ground may have archived them first)
            for sink in self.sinks:
                f = fresh
                if getattr(sink, "fresh_to_me", False):
                    if mine is None:
                        mine = kn if kn is not None else np.ones(res.count, dtype=bool)
                    f = mine
                try:
                    sink.on_packets(st.site, st.node, res, f, received)
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
            self._notify_rejected(st, rej, payload)
        for (st, topic, payload, received, q), keep in zip(quarantined, stored, strict=True):
            self._quarantined(st, str(topic), payload, received, q, keep)

    def _route(self, topic: str) -> tuple[str, str, str]:
        """(site, node, kind) of a topic this pipeline accepts; Quarantined otherwise."""
        if not isinstance(topic, str) or len(topic) > MAX_TOPIC:
            raise Quarantined(BAD_TOPIC, f"topic longer than {MAX_TOPIC} characters")
        parts = topics.split(topic)
        if parts is None or parts[2] not in (topics.TM, topics.STATUS):
            raise Quarantined(BAD_TOPIC, "not lunabase/<site>/<node>/{tm,status}")
        site, node, kind = parts
        if (site, node) in self.links and (site, node) != UNKNOWN:
            return site, node, kind
        if not (NODE_ID.match(site) and NODE_ID.match(node)):
            raise Quarantined(BAD_TOPIC, "site or node name not [a-z0-9][a-z0-9_-]{0,31}")
        if self.known is not None and (site, node) not in self.known:
            raise Quarantined(UNKNOWN_NODE, f"{site}/{node} is not in the inventory")
        if len(self.links) >= self.max_links:
            raise Quarantined(UNKNOWN_NODE, f"more than {self.max_links} links")
        return site, node, kind

    def _sample_quota(self, reason: str, now: float) -> bool:
        """True while fewer than quarantine_per_min records of ``reason`` were stored this minute."""
        w = self._q_window.get(reason)
        if w is None or now - w[0] >= 60.0:
            w = self._q_window[reason] = [now, 0]
        if w[1] >= self.quarantine_per_min:
            return False
        w[1] += 1
        return True

    def _quarantine_alone(self, topic: str, payload: bytes, received: float, reason: str, detail: str) -> None:
        """Quarantine one message in its own transaction (after it made the batch raise)."""
        q = Quarantined(reason, detail[:300])
        keep = self._sample_quota(reason, received)
        if keep:
            with self.archive.transaction() as tx:
                tx.append_quarantine(received, str(topic), reason, len(payload), q.detail, bytes(payload[:SAMPLE_BYTES]))
            self.last_commit = time.time()
        site_node = topics.split(topic) if isinstance(topic, str) else None
        st = self.links.get((site_node[0], site_node[1])) if site_node else None
        self._quarantined(st or self.link(*UNKNOWN), str(topic), payload, received, q, keep)

    def _quarantined(self, st: LinkStats, topic: str, payload: bytes, received: float, q: Quarantined,
                     stored: bool) -> None:
        self.quarantine[q.reason] = self.quarantine.get(q.reason, 0) + 1
        self.quarantine_stored += stored
        st.messages += 1
        st.count_error(q.reason, len(payload))
        self.recent_quarantine.append({"received": received, "topic": topic[:MAX_TOPIC], "reason": q.reason,
                                       "detail": q.detail[:200], "size": len(payload)})
        self.rlog.warning(q.reason, "quarantined a %d-byte message on %r: %s (%d %s so far)", len(payload),
                          topic[:MAX_TOPIC], q.detail[:200], self.quarantine[q.reason], q.reason)
        if (st.site, st.node) != UNKNOWN:  # the ?/? bucket is no node's: on_quarantined only
            self._notify_rejected(st, [Rejected(0, len(payload), q.reason)], payload)
        for sink in self.sinks:
            hook = getattr(sink, "on_quarantined", None)
            if hook is not None:
                try:
                    hook(topic, q.reason, q.detail, received)
                except Exception:
                    self._sink_failed("on_quarantined", sink)

    def _notify_rejected(self, st: LinkStats, rej: list[Rejected], payload: bytes) -> None:
        for sink in self.sinks:
            try:
                sink.on_rejected(st.site, st.node, rej, payload)
            except Exception:
                self._sink_failed("on_rejected", sink)

    def _sink_failed(self, hook: str, sink: IngestSink) -> None:
        self.sink_errors[hook] = self.sink_errors.get(hook, 0) + 1
        self.rlog.error(f"sink:{hook}", "sink %r failed in %s (%d failure(s) so far)", sink, hook,
                        self.sink_errors[hook], exc_info=True)

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
                # this worker's stream only (a shared subscription splits it): the archive's
                # gap account (ground/archive/_gaps.py) is the one the ground reports
                log.debug("%s/%s APID %d: %d count(s) from seq %d not in this worker's stream",
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

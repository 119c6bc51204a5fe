"""Per-link counters, sequence-gap detection and the recent-key de-duplication window."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wire.ccsds import SEQ_MOD

HALF = SEQ_MOD // 2
RATE_WINDOW_S = 5


@dataclass
class Gap:
    """A run of missing sequence counts on one (node, APID): [first, first + count) mod ``SEQ_MOD``."""

    site: str
    node: str
    apid: int
    first: int
    count: int
    detected: float
    filled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "node": self.node, "apid": self.apid, "first": self.first,
                "count": self.count, "filled": self.filled, "detected": self.detected}


class SeqTracker:
    """Sequence state of one (node, APID): expected next count, missing counts, last time tag.

    Fed only with fresh (non-duplicate) packets, in arrival order.  A count ahead of the
    expected one opens a gap; a count behind it with an older time tag is a late packet
    (e.g. answered by a REPLAY command) and fills the gap it belongs to; a count behind it
    with a newer time tag means the node restarted its counter.
    """

    __slots__ = ("expected", "last_ticks", "missing", "gaps", "missing_total", "filled", "late", "resets")

    def __init__(self) -> None:
        self.expected = -1
        self.last_ticks = -1
        self.missing: dict[int, Gap] = {}  # seq -> the gap it belongs to
        self.gaps: list[Gap] = []
        self.missing_total = 0
        self.filled = 0
        self.late = 0
        self.resets = 0

    def feed(self, seq: np.ndarray, ticks: np.ndarray, site: str, node: str, apid: int, now: float) -> list[Gap]:
        """Account for fresh packets; returns gaps newly opened."""
        n = len(seq)
        if n == 0:
            return []
        s0 = int(seq[0])
        # fast path: one consecutive, time-ordered run starting where we expected
        if (s0 == self.expected and int(ticks[0]) >= self.last_ticks
                and (n == 1 or (np.all(np.diff(seq.astype(np.int32)) % SEQ_MOD == 1) and np.all(np.diff(ticks) >= 0)))):
            self.expected = (int(seq[-1]) + 1) % SEQ_MOD
            self.last_ticks = int(ticks[-1])
            return []
        opened = []
        for s, t in zip(seq.tolist(), ticks.tolist(), strict=False):
            if self.expected < 0:
                self.expected = (s + 1) % SEQ_MOD
                self.last_ticks = t
                continue
            d = (s - self.expected) % SEQ_MOD
            if d == 0:
                pass
            elif d < HALF and t >= self.last_ticks:
                g = Gap(site, node, apid, self.expected, d, now)
                opened.append(g)
                self.gaps.append(g)
                if len(self.gaps) > 256:
                    self.gaps.pop(0)
                for k in range(d):
                    self.missing[(self.expected + k) % SEQ_MOD] = g
                self.missing_total += d
            elif t <= self.last_ticks:
                g2 = self.missing.pop(s, None)
                if g2 is not None:
                    g2.filled += 1
                    self.missing_total -= 1
                    self.filled += 1
                else:
                    self.late += 1
                continue  # a late packet does not move the expectation
            else:
                self.resets += 1
                self.missing.clear()
                self.missing_total = 0
            self.expected = (s + 1) % SEQ_MOD
            self.last_ticks = max(self.last_ticks, t)
        return opened


class RecentKeys:
    """The last ~``size`` (ticks, seq, crc) keys of one (node, APID), to spot redeliveries cheaply.

    Only a hint: the archive's unique key is the authority (it survives restarts).  The
    CRC is part of it, so a packet with a known (ticks, seq) but other contents (a node
    whose clock and counters restarted) is never taken for a redelivery here.
    """

    __slots__ = ("keys", "chunks", "n", "size", "max_ticks")

    def __init__(self, size: int = 20000) -> None:
        self.keys: dict[int, int] = {}  # ticks * SEQ_MOD + seq -> crc
        self.chunks: collections.deque[list[int]] = collections.deque()
        self.n = 0
        self.size = size
        self.max_ticks = -1

    def seen(self, ticks: np.ndarray, seq: np.ndarray, crc: np.ndarray | None = None) -> np.ndarray | None:
        """Mask of keys already seen, or None when none can be (all newer than anything seen)."""
        if len(ticks) == 0 or int(ticks.min()) > self.max_ticks:
            return None
        keys = (ticks.astype(np.int64) * SEQ_MOD + seq).tolist()
        get = self.keys.get
        if crc is None:
            return np.fromiter((get(x) is not None for x in keys), dtype=bool, count=len(keys))
        return np.fromiter((get(x) == c for x, c in zip(keys, crc.tolist(), strict=False)), dtype=bool, count=len(keys))

    def add(self, ticks: np.ndarray, seq: np.ndarray, crc: np.ndarray | None = None) -> None:
        if len(ticks) == 0:
            return
        keys = (ticks.astype(np.int64) * SEQ_MOD + seq).tolist()
        self.keys.update(zip(keys, crc.tolist() if crc is not None else [-1] * len(keys), strict=False))
        self.chunks.append(keys)
        self.n += len(keys)
        self.max_ticks = max(self.max_ticks, int(ticks.max()))
        while self.n > self.size and len(self.chunks) > 1:
            old = self.chunks.popleft()
            self.n -= len(old)
            for k in old:
                self.keys.pop(k, None)


@dataclass
class LinkStats:
    """Counters of one node's link (site/node), all since the ingest started."""

    site: str
    node: str
    messages: int = 0
    packets: int = 0  # accepted packets, duplicates included
    fresh: int = 0
    bytes: int = 0  # payload bytes received
    duplicates: int = 0
    collisions: int = 0  # same key as an archived packet, other bytes: kept in the archive's collisions
    status_messages: int = 0
    last_contact: float = 0.0
    errors: dict[str, list[int]] = field(default_factory=dict)  # reason -> [ranges, bytes]
    seq: dict[int, SeqTracker] = field(default_factory=dict)
    _buckets: collections.deque[list[int]] = field(default_factory=lambda: collections.deque(maxlen=RATE_WINDOW_S + 2))

    def count_traffic(self, now: float, packets: int, nbytes: int) -> None:
        sec = int(now)
        b = self._buckets
        if b and b[-1][0] == sec:
            b[-1][1] += packets
            b[-1][2] += nbytes
        else:
            b.append([sec, packets, nbytes])

    def count_packets(self, res: Any, fresh: np.ndarray, received: float, collisions: int = 0) -> int:
        """Count one parsed message's packets (``fresh``: mask of the not-yet-archived ones); fresh count.

        ``collisions``: packets not fresh because their key matched an archived packet with
        other bytes (kept in the archive's collisions), not duplicates."""
        nfresh = int(np.count_nonzero(fresh))
        self.packets += res.count
        self.fresh += nfresh
        self.duplicates += res.count - nfresh - collisions
        self.collisions += collisions
        self.count_traffic(received, nfresh, int(res.length[fresh].sum()) if nfresh < res.count
                           else int(res.length.sum()))
        return nfresh

    def track(self, apid: int, seq: np.ndarray, ticks: np.ndarray, now: float) -> list[Gap]:
        """Feed one APID's fresh packets to its ``SeqTracker``; the gaps newly opened."""
        tr = self.seq.get(apid)
        if tr is None:
            tr = self.seq[apid] = SeqTracker()
        return tr.feed(seq, ticks, self.site, self.node, apid, now)

    def count_error(self, reason: str, nbytes: int) -> None:
        e = self.errors.get(reason)
        if e is None:
            self.errors[reason] = [1, nbytes]
        else:
            e[0] += 1
            e[1] += nbytes

    def rates(self, now: float) -> tuple[float, float]:
        """(packets/s, bytes/s) over the last RATE_WINDOW_S complete seconds."""
        sec = int(now)
        p = b = 0
        for s, pk, by in self._buckets:
            if sec - RATE_WINDOW_S <= s < sec:
                p += pk
                b += by
        return p / RATE_WINDOW_S, b / RATE_WINDOW_S

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        pps, bps = self.rates(now)
        gaps = sum(len(t.gaps) for t in self.seq.values())
        return {
            "site": self.site,
            "node": self.node,
            "messages": self.messages,
            "packets": self.packets,
            "fresh": self.fresh,
            "bytes": self.bytes,
            "packets_per_s": pps,
            "bytes_per_s": bps,
            "duplicates": self.duplicates,
            "collisions": self.collisions,
            "status_messages": self.status_messages,
            "errors": {r: {"count": c, "bytes": b} for r, (c, b) in self.errors.items()},
            "rejected_bytes": sum(b for _c, b in self.errors.values()),
            "gaps": gaps,
            "missing": sum(t.missing_total for t in self.seq.values()),
            "filled": sum(t.filled for t in self.seq.values()),
            "late": sum(t.late for t in self.seq.values()),
            "seq_resets": sum(t.resets for t in self.seq.values()),
            "last_contact": self.last_contact,
            "age_s": (now - self.last_contact) if self.last_contact else None,
            "apids": {apid: {"expected_seq": t.expected, "missing": t.missing_total, "gaps": len(t.gaps)}
                      for apid, t in self.seq.items()},
        }

    def view(self, now: float | None = None) -> dict[str, Any]:
        """The client interface's per-link counters (``GET /api/links``, docs/ground-api.md)."""
        return link_view(self.snapshot(now))


def link_view(d: dict[str, Any]) -> dict[str, Any]:
    """The client interface's shape of one ``LinkStats.snapshot()``: packets = fresh ones, errors by count."""
    return {"packets": d["fresh"], "messages": d["messages"], "bytes": d["bytes"],
            "packets_per_s": round(d["packets_per_s"], 2), "bytes_per_s": round(d["bytes_per_s"], 1),
            "errors": {r: e["count"] for r, e in d["errors"].items()},
            "rejected_bytes": d["rejected_bytes"], "gaps": d["gaps"],
            "missing": d.get("missing", 0), "duplicates": d["duplicates"], "collisions": d.get("collisions", 0),
            "last_contact": d.get("last_contact")}

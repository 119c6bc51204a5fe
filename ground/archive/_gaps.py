"""Sequence-gap accounting in the archive, where every ingest worker sees it.

Two tables (schema v3, both backends)::

    seqstate(node_id, apid, expected, last_ticks, late, resets, updated)
                         per (node, APID): the next sequence count expected and the
                         newest time tag archived, updated in the transaction that
                         archives the packets (rows locked: workers take turns)
    gaps(id, node_id, apid, first, count, missing, t_lo, t_hi, detected, updated, state,
         requests, last_request, node_dropped, reason)
                         runs of missing counts [first, first + count) mod SEQ_MOD whose
                         packets were stamped in [t_lo, t_hi] (the neighbours' tags)

Accounting runs on what a transaction archives fresh, in commit order, under a
per-node lock (a transaction advisory lock on PostgreSQL; SQLite has one writer),
so any number of workers of a shared subscription keep one consistent account.  A count
ahead of ``expected`` with a newer tag opens a gap; a count behind it with an older tag
fills the gap whose counts and tag range hold it; behind with a newer tag is a counter
restart (a reset, not a gap).

Shared subscriptions deliver one node's messages to several workers, so commits can come
out of order: worker B may archive counts 20..29 before worker A archives 10..19.  That
opens a gap which A's commit fills a moment later.  A gap filled within ``settle_s`` of
its detection, before anyone asked for it, was such a reordering: its row is deleted and
it is never reported.  Gap
queries (``Archive.gaps``) leave out open gaps younger than ``settle_s``.

States: ``open`` (missing counts, nobody asked yet), ``refilling`` (the ground asked the
node to REPLAY them), ``filled`` (every count archived), ``lost`` (the node no longer
has them: ``node_dropped`` is the node's own journal drop count when the ground gave up).
Ingest writes open/filled; the ground's refiller (ground/ops/refill.py) writes
refilling/lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wire.ccsds import SEQ_MOD

HALF = SEQ_MOD // 2
OPEN, REFILLING, FILLED, LOST = "open", "refilling", "filled", "lost"
GAP_STATES = (OPEN, REFILLING, FILLED, LOST)
#: seconds a gap must stay open before it is reported (shared-subscription reordering)
SETTLE_S = 10.0
LOCK_CLASS = 4242002  # PostgreSQL advisory lock class of the per-node gap accounting

GAP_COLUMNS = ("id", "node_id", "apid", "first", "count", "missing", "t_lo", "t_hi", "detected", "updated", "state",
               "requests", "last_request", "node_dropped", "reason")


@dataclass
class Opened:
    """A gap opened by one transaction (for the log)."""

    node_id: int
    apid: int
    first: int
    count: int


def feed(expected: int, last_ticks: int, seq: list[int], ticks: list[int]
         ) -> tuple[int, int, list[tuple[int, int, int, int]], list[tuple[int, int]], int]:
    """Run fresh packets of one (node, APID), in archive order, through the sequence state.

    Returns (expected, last_ticks, opened [(first, count, t_lo, t_hi)], late [(seq, ticks)],
    resets).
    """
    opened: list[tuple[int, int, int, int]] = []
    late: list[tuple[int, int]] = []
    resets = 0
    for s, t in zip(seq, ticks, strict=True):
        if expected < 0:
            expected, last_ticks = (s + 1) % SEQ_MOD, t
            continue
        d = (s - expected) % SEQ_MOD
        if d == 0:
            pass
        elif d < HALF and t >= last_ticks:
            opened.append((expected, d, last_ticks, t))
        elif t <= last_ticks:
            late.append((s, t))
            continue  # a late packet does not move the expectation
        else:
            resets += 1
        expected = (s + 1) % SEQ_MOD
        last_ticks = max(last_ticks, t)
    return expected, last_ticks, opened, late, resets


def account(tx: Any, groups: dict[tuple[int, int], tuple[list[int], list[int]]], now: float,
            settle_s: float) -> list[Opened]:
    """Account for the fresh packets one transaction archives: ``groups[(node_id, apid)]``
    = (seqs, ticks) in archive order.  Runs inside the caller's transaction."""
    if not groups:
        return []
    a = tx.a
    db = tx.db
    p = a._ph
    keys = sorted(groups)
    nids = sorted({k[0] for k in keys})
    if a._row_locks:
        # PostgreSQL: one transaction at a time per node, locks taken in node order (no
        # deadlock between workers), before the new seqstate rows are inserted
        db.execute(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, n) FROM (SELECT unnest(ARRAY["
                   f"{','.join(str(int(n)) for n in nids)}]::int[]) AS n ORDER BY 1) AS s").fetchall()
    new = [k for k in keys if k not in a._seq_known]
    if new:
        db.cursor().executemany(f"INSERT INTO seqstate VALUES ({p}, {p}, -1, -1, 0, 0, {p}) ON CONFLICT DO NOTHING",
                       [(n, ap, now) for n, ap in new])
    rows = db.execute(f"SELECT node_id, apid, expected, last_ticks FROM seqstate WHERE node_id IN"
                      f" ({','.join(str(int(n)) for n in nids)})").fetchall()
    state = {(int(r[0]), int(r[1])): (int(r[2]), int(r[3])) for r in rows}
    a._seq_known.update(state)
    updates: list[tuple[Any, ...]] = []
    opened_all: list[Opened] = []
    late_by: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for k in keys:
        exp, last = state.get(k, (-1, -1))
        seqs, ticks = groups[k]
        exp2, last2, opened, late, resets = feed(exp, last, seqs, ticks)
        updates.append((exp2, last2, len(late), resets, now, k[0], k[1]))
        for first, count, t_lo, t_hi in opened:
            db.execute(f"INSERT INTO gaps (node_id, apid, first, count, missing, t_lo, t_hi, detected, updated, state,"
                       f" requests, last_request, node_dropped, reason) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p},"
                       f" {p}, {p}, {p}, 0, NULL, NULL, '')", (k[0], k[1], first, count, count, t_lo, t_hi, now, now,
                                                            OPEN))
            opened_all.append(Opened(k[0], k[1], first, count))
        if late:
            late_by[k] = late
    db.cursor().executemany(f"UPDATE seqstate SET expected = {p}, last_ticks = {p}, late = late + {p}, resets = resets + {p},"
                   f" updated = {p} WHERE node_id = {p} AND apid = {p}", updates)
    for (nid, apid), late in late_by.items():
        _fill(tx, nid, apid, late, now, settle_s)
    return opened_all


def _fill(tx: Any, nid: int, apid: int, late: Sequence[tuple[int, int]], now: float, settle_s: float) -> None:
    """Count late packets against the unfilled gaps whose counts and tag range hold them."""
    db, p = tx.db, tx.a._ph
    gaps = db.execute(f"SELECT id, first, count, missing, t_lo, t_hi, detected, requests FROM gaps WHERE node_id = {p}"
                      f" AND apid = {p} AND state <> {p} ORDER BY id", (nid, apid, FILLED)).fetchall()
    if not gaps:
        return
    got: dict[int, int] = {}
    for s, t in late:
        for gid, first, count, _m, t_lo, t_hi, _d, _r in gaps:
            if (s - first) % SEQ_MOD < count and t_lo <= t <= t_hi:
                got[gid] = got.get(gid, 0) + 1
                break
    for gid, _first, _count, missing, _t_lo, _t_hi, detected, requests in gaps:
        n = got.get(gid)
        if not n:
            continue
        left = max(0, int(missing) - n)
        if left == 0 and not requests and now - float(detected) < settle_s:
            db.execute(f"DELETE FROM gaps WHERE id = {p}", (gid,))  # reordered between workers: never a gap
        elif left == 0:
            db.execute(f"UPDATE gaps SET missing = 0, state = {p}, updated = {p} WHERE id = {p}", (FILLED, now, gid))
        else:
            db.execute(f"UPDATE gaps SET missing = {p}, updated = {p} WHERE id = {p}", (left, now, gid))


def groups_of(items: Sequence[tuple[str, str, Any, bytes, float, np.ndarray | None]], masks: Sequence[np.ndarray],
              nids: Sequence[int]) -> dict[tuple[int, int], tuple[list[int], list[int]]]:
    """The fresh packets of an ``append_many`` call as {(node_id, apid): (seqs, ticks)}, in order."""
    out: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for (_s, _n, result, _p, _r, _k), fresh, nid in zip(items, masks, nids, strict=True):
        if not result.count:
            continue
        for apid, tab in result.tables.items():
            rows = tab.rows if fresh.all() else tab.rows[fresh[tab.rows]]
            if not len(rows):
                continue
            g = out.setdefault((nid, int(apid)), ([], []))
            g[0].extend(result.seq[rows].tolist())
            g[1].extend(result.ticks[rows].tolist())
    return out


def gap_row(r: Sequence[Any], names: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """One ``gaps`` row as the API's dict."""
    d = dict(zip(GAP_COLUMNS, r, strict=True))
    site, node = names.get(int(d.pop("node_id")), ("?", "?"))
    count, missing = int(d["count"]), int(d["missing"])
    first = int(d["first"])
    return {"id": int(d["id"]), "site": site, "node": node, "apid": int(d["apid"]), "first": first,
            "last": (first + count - 1) % SEQ_MOD, "count": count, "missing": missing, "filled": count - missing,
            "t_lo": int(d["t_lo"]), "t_hi": int(d["t_hi"]), "detected": float(d["detected"]),
            "updated": float(d["updated"]), "state": str(d["state"]), "requests": int(d["requests"]),
            "last_request": None if d["last_request"] is None else float(d["last_request"]),
            "node_dropped": None if d["node_dropped"] is None else int(d["node_dropped"]),
            "reason": str(d["reason"] or "")}

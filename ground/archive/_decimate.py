"""History of one parameter sized for a plot: min/max per pixel bucket (Open MCT ``minmax``).

``minmax(archive, "HK", "cpu_temp", node="n01", t0=..., t1=..., size=800)`` returns at most
``2 * size`` points: for each of ``size`` equal time buckets between t0 and t1 the lowest
and the highest value, each at its own time, in time order, so a spike of one sample in a
week still shows.  When the range holds at most ``2 * size`` samples they are returned
as they are (``decimated`` False).  ``page_after`` gives raw samples after a time for
tables (``limit`` rows, ``more`` says whether another page follows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ground.archive._base import TICKS_PER_S, TIME_QUALITY, Archive, correct_ticks, unix_to_ticks
from wire.timetag import ticks_to_unix


def _column(archive: Archive, packet: str, field: str, node: str, t0: float | None, t1: float | None,
            site: str | None) -> tuple[np.ndarray, np.ndarray]:
    tab = archive.table(packet, node=node, t0=t0, t1=t1, site=site, columns=[field])
    return np.asarray(tab["time"], dtype=np.float64), np.asarray(tab[field], dtype=np.float64)


#: above this many archive segments in the range, the database buckets the range itself
EXACT_MAX_SEGMENTS = 20000
#: extreme segments fetched per statement (one sub-select each)
_CHUNK = 200


def _segments(archive: Archive, packet: str, node: str, t0: float, t1: float, site: str | None,
              limit: int = EXACT_MAX_SEGMENTS) -> int:
    spec = archive.spec(packet)
    where: list[str] = []
    params: list[Any] = []
    if not archive._node_filter(site, node, where, params):  # same package
        return 0
    where += [f"t1 >= {archive._ph}", f"t0 < {archive._ph}"]
    params += [unix_to_ticks(t0), unix_to_ticks(t1)]
    # counted up to the limit only: all this needs to know is which side of it the range is
    return int(archive._select(f"SELECT COUNT(*) FROM (SELECT 1 FROM {spec.table} WHERE " + " AND ".join(where)
                               + f" LIMIT {int(limit) + 1}) c", params)[0][0])


def minmax(archive: Archive, packet: str, field: str, node: str, t0: float, t1: float, size: int,
           site: str | None = None, exact_max_segments: int = EXACT_MAX_SEGMENTS) -> dict[str, Any]:
    """At most 2*size (time, value) points of ``packet.field`` of ``node`` in [t0, t1).

    For each of ``size`` equal buckets the lowest and the highest sample, each at its own
    time, exact for any range.  Up to ``exact_max_segments`` (EXACT_MAX_SEGMENTS) archive segments in the range every
    sample is read (``method`` "exact").  Beyond, the database does the bucketing
    (``method`` "database", ``_bucketed``): a GROUP BY over the segments' min/max columns,
    then only the segments holding a bucket's extreme and those that straddle a bucket edge
    are read, so a week of 1 Hz data costs a few plot widths of segments, not a week of them.
    """
    if not t1 > t0:
        raise ValueError(f"the end ({t1}) must be after the start ({t0})")
    size = max(1, min(int(size), 20000))
    if _segments(archive, packet, node, t0, t1, site, exact_max_segments) > exact_max_segments:
        out = _bucketed(archive, packet, field, node, t0, t1, size, site)
        out["method"] = "database"
        return out
    t, v = _column(archive, packet, field, node, t0, t1, site)
    out = _envelope(t, v, t0, t1, size, len(t))
    out["method"] = "exact"
    return out


def _bucketed(archive: Archive, packet: str, field: str, node: str, t0: float, t1: float, size: int,
              site: str | None) -> dict[str, Any]:
    """Exact min/max per bucket with the bucketing in SQL (SQLite and PostgreSQL alike).

    Buckets are ``width`` ticks of the node's own time tags from ``lo``.  A segment (one
    node, one packet type, one ingest batch) whose time tags all fall in one bucket inside
    the range gives its bucket its min/max columns (``lo<j>``/``hi<j>``, computed at ingest);
    ``GROUP BY (t0 - lo) / width`` reduces them to one min and one max per bucket, then
    for each bucket the first segment holding that value is read to find the sample (its
    time).  Segments crossing a bucket edge or the range's, or without min/max columns
    (archived before they existed) are read whole.  The union of those samples is reduced
    per bucket again, so every bucket's extreme survives.
    """
    spec = archive.spec(packet)
    j = spec.numeric.index(field)
    lo_c, hi_c = f"lo{j}", f"hi{j}"
    m = len(spec.numeric)
    ph = archive._ph
    where: list[str] = []
    params: list[Any] = []
    if not archive._node_filter(site, node, where, params):
        return {"time": [], "value": [], "count": 0, "decimated": False}
    nid = int(where[0][len("node_id IN ("):-1].split(",")[0])
    lo, hi = unix_to_ticks(t0), unix_to_ticks(t1)
    width = max(1, -(-(hi - lo) // size))
    tab = spec.table
    rng = f"node_id = {nid} AND t1 >= {ph} AND t0 < {ph}"
    inside = (f"{rng} AND t0 >= {ph} AND t1 < {ph} AND (t0 - {ph}) / {ph} = (t1 - {ph}) / {ph}"
              f" AND {lo_c} IS NOT NULL")
    inside_p: list[Any] = [lo, hi, lo, hi, lo, width, lo, width]
    agg = archive._select(f"SELECT (t0 - {ph}) / {ph}, MIN({lo_c}), MAX({hi_c}), SUM(n) FROM {tab} WHERE {inside}"
                          " GROUP BY 1", [lo, width, *inside_p])
    count = sum(int(r[3]) for r in agg)  # + the samples of the segments read whole, below
    # the segment holding each bucket's min (max): the first one in time, an index walk per bucket
    subs: list[tuple[str, list[Any]]] = []
    for b, mn, mx, _n in agg:
        b_lo, b_hi = lo + int(b) * width, min(hi, lo + (int(b) + 1) * width)
        for col, val in ((lo_c, mn), (hi_c, mx)):
            subs.append((f"SELECT * FROM (SELECT ticks, vals FROM {tab} WHERE node_id = {nid} AND t1 >= {ph}"
                         f" AND t1 < {ph} AND t0 >= {ph} AND {col} = {ph} ORDER BY t1 LIMIT 1) s",
                         [b_lo, b_hi, b_lo, val]))
    rows: list[tuple[Any, ...]] = []
    for k in range(0, len(subs), _CHUNK):
        part = subs[k:k + _CHUNK]
        rows += archive._select(" UNION ALL ".join(q for q, _p in part), [x for _q, p in part for x in p])
    # straddling or without min/max: every sample
    whole = archive._select(f"SELECT ticks, vals FROM {tab} WHERE {rng} AND NOT ({inside})", [lo, hi, *inside_p])
    for r in whole:
        tk = np.frombuffer(bytes(r[0]), "<i8")
        count += int(((tk >= lo) & (tk < hi)).sum())
    rows += whole
    if not rows:
        return {"time": [], "value": [], "count": count, "decimated": False}
    ticks = np.concatenate([np.frombuffer(bytes(r[0]), "<i8") for r in rows])
    vals = np.concatenate([np.frombuffer(bytes(r[1]), "<f8").reshape(-1, m)[:, j] for r in rows])
    keep = (ticks >= lo) & (ticks < hi) & np.isfinite(vals)
    ticks, vals = ticks[keep], vals[keep]
    o = np.lexsort((vals, ticks))
    ticks, vals = ticks[o], vals[o]
    b = (ticks - lo) // width
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]]) if len(b) else np.zeros(0, np.int64)
    if len(starts) == 0:
        return {"time": [], "value": [], "count": count, "decimated": False}
    bucket_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(vals)]))
    lo_i = _first(vals == np.minimum.reduceat(vals, starts)[bucket_of], bucket_of, len(starts))
    hi_i = _first(vals == np.maximum.reduceat(vals, starts)[bucket_of], bucket_of, len(starts))
    idx = np.unique(np.concatenate([lo_i, hi_i]))
    sel = ticks[idx].astype(np.int64)
    # the times as every query reads them: the node's tags corrected by the ground's time ranges
    quality = np.zeros(len(sel), np.int8)
    ranges = archive.time_corrections().get(nid)
    if ranges:
        sel, quality = correct_ticks(sel, ranges)
    order = np.argsort(sel, kind="stable")
    return {"time": ticks_to_unix(sel[order]).astype(np.float64).tolist(), "value": vals[idx][order].tolist(),
            "count": count, "decimated": True,
            "time_quality": [TIME_QUALITY.get(int(q), "?") for q in quality[order].tolist()]}


def _envelope(t: np.ndarray, v: np.ndarray, t0: float, t1: float, size: int, count: int) -> dict[str, Any]:
    """The min and max sample of each of ``size`` buckets (all samples when they fit in 2*size)."""
    ok = np.isfinite(v)
    if not ok.all():
        t, v = t[ok], v[ok]
    if len(t) > 1 and (np.diff(t) < 0).any():  # corrected time tags need not be monotonic
        o = np.argsort(t, kind="stable")
        t, v = t[o], v[o]
    if len(t) <= 2 * size:
        return {"time": t.tolist(), "value": v.tolist(), "count": count, "decimated": False}
    b = np.minimum(((t - t0) * (size / (t1 - t0))).astype(np.int64), size - 1)
    # the samples are in time order, so each bucket is one contiguous run
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    lo_v = np.minimum.reduceat(v, starts)
    hi_v = np.maximum.reduceat(v, starts)
    bucket_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(v)]))
    # the first sample of each bucket equal to its min (max): the point keeps its own time
    lo_i = _first(v == lo_v[bucket_of], bucket_of, len(starts))
    hi_i = _first(v == hi_v[bucket_of], bucket_of, len(starts))
    idx = np.unique(np.concatenate([lo_i, hi_i]))  # sorted: time order, one point when min is max
    return {"time": t[idx].tolist(), "value": v[idx].tolist(), "count": count, "decimated": True}


def _first(mask: np.ndarray, bucket_of: np.ndarray, nb: int) -> np.ndarray:
    """Index of the first True of each bucket (every bucket has one)."""
    idx = np.flatnonzero(mask)
    first = np.full(nb, -1, dtype=np.int64)
    # reversed assignment: the earliest index of a bucket is written last and wins
    first[bucket_of[idx][::-1]] = idx[::-1]
    return first


def page_after(archive: Archive, packet: str, field: str, node: str, t0: float, t1: float, limit: int,
               site: str | None = None) -> dict[str, Any]:
    """Raw samples in [t0, t1), the first ``limit`` of them; ``next`` is the t0 of the next page."""
    limit = max(1, min(int(limit), 100000))
    t, v = _column(archive, packet, field, node, t0, t1, site)
    more = len(t) > limit
    t, v = t[:limit], v[:limit]
    nxt = None
    if more:
        # the next page starts just after the last time returned: queries select whole ticks (2^-16 s)
        nxt = float(t[-1]) + 0.75 / TICKS_PER_S
    return {"time": t.tolist(), "value": [None if not np.isfinite(x) else float(x) for x in v],
            "count": len(t), "more": more, "next": nxt}


def latest(archive: Archive, packet: str, field: str, node: str, before: float, lookback: float = 86400.0,
           site: str | None = None) -> dict[str, Any]:
    """The last sample before ``before`` (looking back at most ``lookback`` s)."""
    t, v = _column(archive, packet, field, node, before - lookback, before, site)
    if not len(t):
        return {"time": [], "value": [], "count": 0}
    return {"time": [float(t[-1])], "value": [float(v[-1]) if np.isfinite(v[-1]) else None], "count": 1}


def seismic(archive: Archive, node: str, t0: float, t1: float, size: int, packet: str = "SEISMIC",
            site: str | None = None) -> dict[str, Any]:
    """A waveform from the archive: every sample when they fit in 2*size per axis, else
    min/max per bucket per axis.  Returns {"axes", "unit", "rate", "time", <axis>: [...]}."""
    if not t1 > t0:
        raise ValueError(f"the end ({t1}) must be after the start ({t0})")
    size = max(1, min(int(size), 20000))
    p = archive.dictionary.packet(packet)
    spec = p.samples
    if spec is None:
        raise ValueError(f"packet {p.name} carries no sample block")
    tab = archive.table(p.name, node=node, t0=t0 - 5.0, t1=t1, site=site, columns=["rate", "samples"])
    out: dict[str, Any] = {"axes": list(spec.axes), "unit": spec.unit, "rate": None, "time": []}
    for a in spec.axes:
        out[a] = []
    if not len(tab["time"]):
        out["count"] = 0
        return out
    rate = np.asarray(tab["rate"], dtype=np.float64)
    rate[~(rate > 0)] = 100.0
    s = tab["samples"].astype(np.float64) * spec.scale  # (n, count, axes)
    n, count, naxes = s.shape
    t = (np.asarray(tab["time"], dtype=np.float64)[:, None] + np.arange(count)[None, :] / rate[:, None]).ravel()
    s = s.reshape(n * count, naxes)
    keep = (t >= t0) & (t < t1)
    t, s = t[keep], s[keep]
    order = np.argsort(t, kind="stable")
    t, s = t[order], s[order]
    out["rate"] = float(rate[-1])
    out["count"] = len(t)
    if len(t) <= 2 * size:
        out["time"] = t.tolist()
        for i, a in enumerate(spec.axes):
            out[a] = [round(x, 4) for x in s[:, i].tolist()]
        out["decimated"] = False
        return out
    b = np.minimum(((t - t0) * (size / (t1 - t0))).astype(np.int64), size - 1)
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    # per bucket: the time of its first sample, then min and max of each axis (drawn as a band)
    out["time"] = t[starts].tolist()
    for i, a in enumerate(spec.axes):
        col = s[:, i]
        out[a + "_min"] = np.minimum.reduceat(col, starts).round(4).tolist()
        out[a + "_max"] = np.maximum.reduceat(col, starts).round(4).tolist()
    out["decimated"] = True
    return out

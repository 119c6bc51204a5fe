"""Health that tells the truth: each part of the ground checked, ``ok`` false with the reasons.

``GET /api/health`` (and ``lunabase health``, exit code 0/1/2 for monitoring) answer::

    {"ok": false, "reasons": ["archive: 0.4 GB free on /var/lib/lunabase (< 1 GB)"],
     "site": "shackleton", "role": "leader", "time": 1780000000.0,
     "parts": {"ingest": {...}, "archive": {...}, "broker": {...}, "commands": {...},
               "ticks": {...}, "api": {...}, "leader": {...}}}

Every part is ``{"ok": bool, "reason": str | None, ...figures}``; ``reasons`` lists the
reason of every part that is not ok.  What each part checks, with its thresholds, is in
docs/ground-ops.md ("Health").  The functions here only read counters the parts keep;
none of them does I/O beyond a ``stat``/``statvfs`` (health must answer while the rest
is in trouble).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

#: thresholds (seconds, bytes): a part is not ok beyond them
INGEST_LAG_S = 30.0
TICK_LATE_S = 5.0
COMMAND_STUCK_S = 30.0
DISK_FREE_MIN = 512 * 1024 * 1024
WAL_MAX = 1024 * 1024 * 1024

Part = dict[str, Any]


def part(ok: bool, reason: str | None = None, **figures: Any) -> Part:
    return {"ok": ok, "reason": None if ok else reason, **figures}


def ingest_part(worker: Any, now: float | None = None) -> Part:
    """Ingest: backlog/lag, failing batches, quarantined messages, last commit."""
    now = time.time() if now is None else now
    p = worker.pipeline
    lag = worker.lag_s(now)
    figures: dict[str, Any] = {
        "connected": worker.connected.is_set(), "backlog": worker.backlog, "lag_s": round(lag, 2),
        "last_commit": p.last_commit, "last_commit_age_s": round(now - p.last_commit, 2) if p.last_commit else None,
        "batches": p.batches, "failed_batches": p.failed_batches, "isolated_batches": p.isolated_batches,
        "last_error": p.last_error, "quarantined": dict(p.quarantine), "quarantined_total": sum(p.quarantine.values()),
        "sink_errors": dict(p.sink_errors), "acked": worker.acked,
    }
    if worker.failing_since is not None:
        return part(False, f"ingest: failing for {now - worker.failing_since:.0f} s, nothing acknowledged "
                           f"({worker.last_failure or p.last_error})", **figures)
    if lag > INGEST_LAG_S:
        return part(False, f"ingest: {worker.backlog} message(s) waiting, oldest {lag:.0f} s", **figures)
    return part(True, **figures)


def archive_part(archive: Any, pipeline: Any = None) -> Part:
    """Archive: write errors, disk space left (SQLite: its directory), WAL size."""
    figures: dict[str, Any] = {"url": _safe_url(getattr(archive, "url", "")), "disk_free": None, "wal_bytes": None,
                               "checkpoint_errors": getattr(archive, "checkpoint_errors", 0),
                               "failed_batches": getattr(pipeline, "failed_batches", 0),
                               "last_error": getattr(pipeline, "last_error", None)}
    path = getattr(archive, "path", None)
    if path is not None:
        path = Path(path)
        try:
            figures["disk_free"] = shutil.disk_usage(path.parent).free
        except OSError as e:
            return part(False, f"archive: cannot stat {path.parent}: {e}", **figures)
        try:
            figures["wal_bytes"] = os.stat(str(path) + "-wal").st_size
        except OSError:
            figures["wal_bytes"] = 0
        if figures["disk_free"] < DISK_FREE_MIN:
            return part(False, f"archive: {figures['disk_free'] / 1e6:.0f} MB free on {path.parent} "
                               f"(< {DISK_FREE_MIN / 1e6:.0f} MB)", **figures)
        if figures["wal_bytes"] > WAL_MAX:
            return part(False, f"archive: WAL {figures['wal_bytes'] / 1e6:.0f} MB (checkpoints not keeping up)",
                        **figures)
    return part(True, **figures)


def broker_part(ingest_connected: bool, command_connected: bool, last_failure: str | None = None) -> Part:
    figures: dict[str, Any] = {"ingest_connected": ingest_connected, "command_connected": command_connected,
               "last_failure": last_failure}
    if not ingest_connected:
        return part(False, f"broker: ingest not connected ({last_failure or 'connecting'})", **figures)
    if not command_connected:
        return part(False, "broker: command link not connected", **figures)
    return part(True, **figures)


def commands_part(commander: Any, now: float | None = None) -> Part:
    """Command queue: oldest queued, a command due but not released (a jam), ground errors."""
    now = time.time() if now is None else now
    queued = [c for c in list(commander._cmds.values()) if c.get("stage") == "QUEUED"]
    in_flight = sum(1 for c in list(commander._cmds.values()) if c.get("stage") in ("SENT", "ACCEPTED"))
    oldest = min(queued, key=lambda c: c.get("submitted") or now, default=None)
    finals = dict(getattr(commander, "finals", {}))
    held = sum(1 for c in list(commander._cmds.values()) if c.get("stage") == "HELD")
    figures: dict[str, Any] = {"queued": len(queued), "held": held, "in_flight": in_flight, "errors": commander.errors,
               "finished": finals,
               "failures": sum(n for st, n in finals.items() if st not in ("EXECUTED", "CANCELLED")),
               "last_error": commander.last_error,
               "oldest_queued": None if oldest is None else {
                   "id": oldest.get("id"), "node": oldest.get("node"), "command": oldest.get("command"),
                   "age_s": round(now - (oldest.get("submitted") or now), 1)}}
    for c in queued:
        nb = c.get("not_before")
        due_since = max(nb if isinstance(nb, (int, float)) else 0.0, c.get("submitted") or now)
        if commander.reachable(c.get("node")) and now - due_since > COMMAND_STUCK_S and commander.publish:
            return part(False, f"commands: #{c.get('id')} {c.get('command')} to {c.get('node')} due for "
                               f"{now - due_since:.0f} s but not released ({c.get('reason') or 'no reason given'})",
                        **figures)
    return part(True, **figures)


def leader_part(leadership: Any, now: float | None = None) -> Part:
    """The leader lock (ground/ops/leader.py): this ground's role and who leads; not ok when
    the lock cannot be checked (its database unreachable: this ground cannot lead)."""
    now = time.time() if now is None else now
    v = leadership.view()
    if v["error"]:
        return part(False, f"leader: the leader lock cannot be checked ({v['error']}): this ground follows", **v)
    if v["last_check"] is not None and now - v["last_check"] > max(5.0, 5 * v["poll_s"]):
        return part(False, f"leader: lock not checked for {now - v['last_check']:.0f} s", **v)
    return part(True, **v)


def ticks_part(ops: Any, now: float | None = None) -> Part:
    """The ops timers (liveness, shelving, command queue): alive, and each step working."""
    now = time.time() if now is None else now
    last = ops.last_tick
    figures: dict[str, Any] = {"last_tick": last, "age_s": round(now - last, 2) if last else None, "ticks": ops.ticks,
               "errors": dict(ops.tick_errors), "last_error": ops.tick_error}
    if last is None:
        if now - ops.started > TICK_LATE_S:
            return part(False, f"ticks: no ops tick in {now - ops.started:.0f} s since start", **figures)
        return part(True, **figures)
    if now - last > TICK_LATE_S:
        return part(False, f"ticks: last ops tick {now - last:.0f} s ago", **figures)
    if ops.tick_failing:
        return part(False, f"ticks: {', '.join(sorted(ops.tick_failing))} failing ({ops.tick_error})", **figures)
    return part(True, **figures)


def combine(parts: dict[str, Part], **extra: Any) -> dict[str, Any]:
    """The health answer: ok when every part is ok, with the reasons of those that are not."""
    reasons = [p["reason"] or f"{name}: not ok" for name, p in parts.items() if not p["ok"]]
    return {"ok": not reasons, "reasons": reasons, "time": time.time(), **extra, "parts": parts}


def _safe_url(url: str) -> str:
    """The archive URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url

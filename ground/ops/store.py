"""The ops database: event log, alarms, command audit and telecommand counters (SQLite).

Kept apart from the telemetry archive so the operations layer and the data layer stay
decoupled: losing or moving one file never corrupts the other.  Writes are small and
rare next to ingest (transitions, not samples), so plain ``sqlite3`` in WAL mode is used
from the event loop thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, site TEXT, node TEXT,
  kind TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_t ON events(t);
CREATE TABLE IF NOT EXISTS alarms (
  id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT, node TEXT, packet TEXT, field TEXT,
  state TEXT NOT NULL, severity TEXT NOT NULL, max_severity TEXT NOT NULL,
  value REAL, unit TEXT, returned INTEGER NOT NULL DEFAULT 0,
  raised_at REAL, updated_at REAL, acked_by TEXT, acked_at REAL, cleared_at REAL,
  shelved_until REAL, shelved_by TEXT);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms(state);
CREATE TABLE IF NOT EXISTS commands (
  id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT, node TEXT, command TEXT, opcode INTEGER,
  args TEXT, user TEXT, submitted REAL, not_before REAL, not_after REAL, counter INTEGER,
  stage TEXT NOT NULL, reason TEXT, updated REAL, history TEXT, hazardous INTEGER, confirmed INTEGER,
  approved_by TEXT);
CREATE INDEX IF NOT EXISTS commands_node_counter ON commands(site, node, counter);
CREATE TABLE IF NOT EXISTS counters (
  site TEXT NOT NULL, node TEXT NOT NULL, counter INTEGER NOT NULL, PRIMARY KEY (site, node));
"""

Row = dict[str, Any]


class OpsStore:
    """SQLite store for the operations layer; ``":memory:"`` for throwaway use.

    ``listeners`` are called with every new event row (the API pushes them live).
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(commands)")}
        if "approved_by" not in cols:  # an ops database from before the two-person rule
            self.db.execute("ALTER TABLE commands ADD COLUMN approved_by TEXT")
        self.listeners: list[Callable[[Row], None]] = []

    def close(self) -> None:
        self.db.close()

    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Delete events, cleared alarms and final commands older than ``keep_days``; rows deleted."""
        cut = (time.time() if now is None else now) - keep_days * 86400.0
        with self._lock:
            n = self.db.execute("DELETE FROM events WHERE t < ?", (cut,)).rowcount
            n += self.db.execute("DELETE FROM alarms WHERE state = 'cleared' AND cleared_at < ?", (cut,)).rowcount
            n += self.db.execute("DELETE FROM commands WHERE stage NOT IN "
                                 "('AWAITING_APPROVAL','QUEUED','HELD','SENT','ACCEPTED') AND updated < ?",
                                 (cut,)).rowcount
        return n

    # -- events ----------------------------------------------------------------------

    def event(
        self,
        kind: str,
        message: str,
        *,
        site: str | None = None,
        node: str | None = None,
        severity: str = "INFO",
        data: dict[str, Any] | None = None,
        t: float | None = None,
    ) -> Row:
        """Append one event to the log and tell the listeners; returns the row."""
        t = time.time() if t is None else t
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO events (t, site, node, kind, severity, message, data) VALUES (?,?,?,?,?,?,?)",
                (t, site, node, kind, severity, message, json.dumps(data) if data else None),
            )
        row = {"id": cur.lastrowid, "t": t, "site": site, "node": node, "kind": kind,
               "severity": severity, "message": message, "data": data or {}}
        for fn in list(self.listeners):
            fn(row)
        return row

    def events(self, since: float | None = None, limit: int = 200, node: str | None = None,
               kind: str | None = None, after_id: int | None = None) -> list[Row]:
        """Most recent events first (``since`` = unix time, ``after_id`` = newer than)."""
        q, p = "SELECT * FROM events WHERE 1=1", []
        if since is not None:
            q += " AND t >= ?"
            p.append(since)
        if after_id is not None:
            q += " AND id > ?"
            p.append(after_id)
        if node is not None:
            q += " AND node = ?"
            p.append(node)
        if kind is not None:
            q += " AND kind = ?"
            p.append(kind)
        q += " ORDER BY id DESC LIMIT ?"
        p.append(int(limit))
        with self._lock:
            rows = self.db.execute(q, p).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["data"] = _loads(d["data"], {})
            out.append(d)
        return out

    # -- alarms ----------------------------------------------------------------------

    def insert_alarm(self, a: Row) -> int:
        cols = [k for k in a if k != "id"]
        with self._lock:
            cur = self.db.execute(
                f"INSERT INTO alarms ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                [a[c] for c in cols],
            )
        return int(cur.lastrowid or 0)

    def update_alarm(self, a: Row) -> None:
        cols = [k for k in a if k != "id"]
        with self._lock:
            self.db.execute(f"UPDATE alarms SET {','.join(c + '=?' for c in cols)} WHERE id=?",
                            [a[c] for c in cols] + [a["id"]])

    def alarms(self, open_only: bool = True, limit: int = 500) -> list[Row]:
        q = "SELECT * FROM alarms" + (" WHERE state != 'cleared'" if open_only else "") + " ORDER BY id DESC LIMIT ?"
        with self._lock:
            return [dict(r) for r in self.db.execute(q, (limit,)).fetchall()]

    # -- commands --------------------------------------------------------------------

    def insert_command(self, c: Row) -> int:
        c = {k: (json.dumps(v) if k in ("args", "history") else v) for k, v in c.items() if k != "id"}
        with self._lock:
            cur = self.db.execute(
                f"INSERT INTO commands ({','.join(c)}) VALUES ({','.join('?' * len(c))})", list(c.values())
            )
        return int(cur.lastrowid or 0)

    def update_command(self, c: Row) -> None:
        d = {k: (json.dumps(v) if k in ("args", "history") else v) for k, v in c.items() if k != "id"}
        with self._lock:
            self.db.execute(f"UPDATE commands SET {','.join(k + '=?' for k in d)} WHERE id=?",
                            list(d.values()) + [c["id"]])

    def commands(self, limit: int = 200, open_only: bool = False, cid: int | None = None) -> list[Row]:
        """Command rows, newest first (``cid``: just that one)."""
        q, p = "SELECT * FROM commands", []
        if cid is not None:
            q += " WHERE id = ?"
            p.append(cid)
        elif open_only:
            q += " WHERE stage IN ('AWAITING_APPROVAL','QUEUED','HELD','SENT','ACCEPTED')"
        q += " ORDER BY id DESC LIMIT ?"
        p.append(limit)
        with self._lock:
            rows = self.db.execute(q, p).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            # rows come from disk: an unreadable field is passed on as it is (the commander
            # fails such a command with a reason) instead of making every read raise
            d["args"] = _loads(d["args"], {})
            d["history"] = _loads(d["history"], [])
            if not isinstance(d["history"], list):
                d["history"] = []
            d["hazardous"], d["confirmed"] = bool(d["hazardous"]), bool(d["confirmed"])
            out.append(d)
        return out

    def next_counter(self, site: str, node: str, floor: int = 0) -> int:
        """Allocate the next telecommand counter for a node: > every earlier one, >= floor.

        Committed before it is returned, so a ground restart never reuses a counter.
        """
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                r = self.db.execute("SELECT counter FROM counters WHERE site=? AND node=?", (site, node)).fetchone()
                c = max((r[0] + 1) if r else 1, floor)
                self.db.execute(
                    "INSERT INTO counters (site, node, counter) VALUES (?,?,?) "
                    "ON CONFLICT(site, node) DO UPDATE SET counter=excluded.counter",
                    (site, node, c),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return c


def _loads(text: Any, empty: Any) -> Any:
    """JSON ``text`` decoded; ``empty`` for NULL/''; the text itself when it is not JSON."""
    if not text:
        return empty
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return text

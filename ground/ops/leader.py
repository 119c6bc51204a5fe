"""One ops layer per site, however many grounds run: a leader lock in the archive's database.

Several ``lunabase ground`` processes may share one archive (each ingests and serves reads);
only the one holding the lock runs the operations layer's actions — alarms, the command
queue and its releases, automatic time syncs and resyncs, shelving expiry, pruning.  The
others are followers: their writes (commands, approvals, alarm acknowledgements) are
refused with ``NotLeader``, naming the leader and its client interface.

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of
  its own, plus a row in ``lunabase_leader`` saying who holds it (for the followers'
  answers; the lock, not the row, decides).  The server frees the lock the moment the
  holder's session ends: at once when the process dies (the kernel closes its socket),
  within the TCP keepalive (5 + 3 × 2 s, set on the session) when its host or network
  does.  A leader that cannot check its lock within ``check_timeout`` steps down first.
- **SQLite** (one host by nature): an exclusive ``flock`` on ``<archive>.leader``, held by
  the open file; the kernel releases it when the process dies.  The holder's identity is
  written into the file.

Followers try every ``poll_s`` (1 s): fail-over after the leader's death takes at most
``poll_s`` plus the time its session takes to end (``failover_s`` states the bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any

from ground.errors import GroundError

log = logging.getLogger("ground.leader")

LEADER, FOLLOWER = "leader", "follower"
_LOCK_CLASS = 0x4C42  # "LB": the first key of the advisory lock; the second is the site's CRC


class NotLeader(GroundError):
    """A write on a follower ground; ``leader`` says who leads (id, api, host, since) if known."""

    def __init__(self, message: str, leader: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.leader = leader


class LeaderLock:
    """The lock's common part: ``check()`` (blocking, in a thread) returns whether this ground
    leads; ``holder()`` who does.  ``me`` is this ground's identity (id, api, host, pid)."""

    kind = "none"
    #: the stated fail-over bound after the leader dies (s): poll + the session ending
    failover_s = 0.0

    def __init__(self, site: str, me: dict[str, Any], poll_s: float = 1.0) -> None:
        self.site = site
        self.me = me
        self.poll_s = poll_s
        self.leading = False
        self.since: float | None = None

    def check(self) -> bool:
        raise NotImplementedError

    def holder(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        """Write ``me`` again as the holder's identity (it changed: the API's URL is known)."""


class PgLeaderLock(LeaderLock):
    """PostgreSQL: a session advisory lock on a dedicated connection (see the module doc)."""

    kind = "postgresql advisory lock"

    def __init__(self, dsn: str, site: str, me: dict[str, Any], poll_s: float = 1.0) -> None:
        super().__init__(site, me, poll_s)
        self.dsn = dsn
        self.key = zlib.crc32(site.encode()) & 0x7FFFFFFF
        self.db: Any = None
        # the holder's session ends at once when its process dies; a dead host or network
        # is noticed by the server's keepalive: 5 s idle + 3 probes 2 s apart
        self.failover_s = poll_s + 11.0

    def _connect(self) -> Any:
        import psycopg

        db = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3, keepalives=1, keepalives_idle=5,
                             keepalives_interval=2, keepalives_count=3, application_name="lunabase-leader")
        db.execute("SET tcp_keepalives_idle = 5")
        db.execute("SET tcp_keepalives_interval = 2")
        db.execute("SET tcp_keepalives_count = 3")
        db.execute("SET statement_timeout = 3000")
        db.execute("CREATE TABLE IF NOT EXISTS lunabase_leader (site TEXT PRIMARY KEY, holder TEXT NOT NULL, "
                    "since DOUBLE PRECISION, heartbeat DOUBLE PRECISION)")
        return db

    def check(self) -> bool:
        try:
            if self.db is None or self.db.closed:
                self.db = self._connect()
                self.leading = False
            if not self.leading:
                got = self.db.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, self.key)).fetchone()[0]
                if got:
                    self.leading, self.since = True, time.time()
                    self.db.execute(
                        "INSERT INTO lunabase_leader (site, holder, since, heartbeat) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (site) DO UPDATE SET holder = EXCLUDED.holder, since = EXCLUDED.since, "
                        "heartbeat = EXCLUDED.heartbeat", (self.site, json.dumps(self.me), self.since, self.since))
            else:
                # still ours? (a session the server ended would fail here, and we step down)
                self.db.execute("UPDATE lunabase_leader SET heartbeat = %s WHERE site = %s", (time.time(), self.site))
        except Exception as e:
            if self.leading:
                log.error("leader lock: lost the database (%s: %s): stepping down", type(e).__name__, e)
            self.leading = False
            self._close()
        return self.leading

    def refresh(self) -> None:
        if self.leading and self.db is not None:
            self.db.execute("UPDATE lunabase_leader SET holder = %s WHERE site = %s", (json.dumps(self.me), self.site))

    def holder(self) -> dict[str, Any] | None:
        try:
            if self.db is None or self.db.closed:
                return None
            row = self.db.execute("SELECT holder, since, heartbeat FROM lunabase_leader WHERE site = %s",
                                  (self.site,)).fetchone()
        except Exception:
            return None
        if row is None:
            return None
        return {**json.loads(row[0]), "since": row[1], "heartbeat": row[2]}

    def _close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
        self.db = None

    def release(self) -> None:
        self.leading = False
        self._close()  # ending the session frees the lock


class FileLeaderLock(LeaderLock):
    """SQLite: an exclusive flock on a file next to the archive (see the module doc)."""

    kind = "file lock"

    def __init__(self, path: str | Path, site: str, me: dict[str, Any], poll_s: float = 1.0) -> None:
        super().__init__(site, me, poll_s)
        self.path = Path(path)
        self.fd: int | None = None
        self.failover_s = poll_s  # the kernel drops the lock with the process

    def check(self) -> bool:
        import fcntl

        if self.leading:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd, self.leading, self.since = fd, True, time.time()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**self.me, "since": self.since}).encode(), 0)
        os.fsync(fd)
        return True

    def refresh(self) -> None:
        if self.leading and self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps({**self.me, "since": self.since}).encode(), 0)

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor frees the flock
        self.fd, self.leading = None, False


def open_lock(archive_url: str, site: str, me: dict[str, Any], poll_s: float = 1.0) -> LeaderLock:
    """The lock for an archive URL: PostgreSQL's advisory lock, or a file lock next to SQLite."""
    if archive_url.startswith(("postgresql://", "postgres://")):
        return PgLeaderLock(archive_url, site, me, poll_s)
    path = archive_url[len("sqlite:///"):] if archive_url.startswith("sqlite:///") else archive_url
    return FileLeaderLock(f"{path}.leader", site, me, poll_s)


def identity(ground_id: str, api: str | None) -> dict[str, Any]:
    """How a ground names itself to the others (errors, health)."""
    return {"id": ground_id, "api": api, "host": socket.gethostname(), "pid": os.getpid()}


class Leadership:
    """Runs a LeaderLock: ``run()`` checks it every ``poll_s`` and calls ``on_change(leading)``
    when the role changes; ``role``, ``guard()`` and ``view()`` answer the rest of the ground."""

    def __init__(self, lock: LeaderLock, on_change: Any = None, check_timeout: float = 3.0) -> None:
        self.lock = lock
        self.on_change = on_change
        self.check_timeout = check_timeout
        self.leading = False
        self.changes = 0
        self.last_check: float | None = None
        self.error: str | None = None
        self._holder: dict[str, Any] | None = None

    @property
    def role(self) -> str:
        return LEADER if self.leading else FOLLOWER

    async def step(self) -> None:
        """One check of the lock (in a thread, bounded: a hung database means stepping down)."""
        try:
            leading = await asyncio.wait_for(asyncio.to_thread(self.lock.check), self.check_timeout)
            self.error = None
            if not leading:
                self._holder = await asyncio.wait_for(asyncio.to_thread(self.lock.holder), self.check_timeout)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"[:200]
            leading = False
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lock.release)
        self.last_check = time.time()
        if leading != self.leading:
            self.leading = leading
            self.changes += 1
            log.warning("ground %s is now the %s (%s)", self.lock.me.get("id"), self.role, self.lock.kind)
            if self.on_change is not None:
                r = self.on_change(leading)
                if asyncio.iscoroutine(r):
                    await r

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.lock.poll_s)

    def leader(self) -> dict[str, Any] | None:
        """Who leads: this ground, or the holder the database names."""
        if self.leading:
            return {**self.lock.me, "since": self.lock.since}
        return self._holder

    def guard(self, what: str = "this") -> None:
        """NotLeader unless this ground leads."""
        if self.leading:
            return
        ld = self.leader()
        who = (f"{ld.get('id')} ({ld.get('api') or 'no client interface'} on {ld.get('host')})" if ld
               else "unknown (no ground holds the lock)")
        raise NotLeader(f"{what} needs the leader ground: this ground ({self.lock.me.get('id')}) is a follower; "
                        f"the leader is {who}", ld)

    def view(self) -> dict[str, Any]:
        return {"role": self.role, "lock": self.lock.kind, "me": self.lock.me, "leader": self.leader(),
                "since": self.lock.since if self.leading else None, "poll_s": self.lock.poll_s,
                "failover_s": self.lock.failover_s, "changes": self.changes, "last_check": self.last_check,
                "error": self.error}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.lock.release()
        self.leading = False


__all__ = ["FOLLOWER", "LEADER", "FileLeaderLock", "LeaderLock", "Leadership", "NotLeader", "PgLeaderLock",
           "identity", "open_lock"]

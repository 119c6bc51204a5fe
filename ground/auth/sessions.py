"""Login sessions (access, refresh and browser-cookie tokens) and the failed-login limiter.

A login opens a session with three random tokens, kept only as SHA-256 hashes:

- an access token (``lba_...``, ``access_ttl`` = 10 min) for ``Authorization: Bearer``;
- a refresh token (``lbr_...``) that buys a new access+refresh pair once: using a refresh
  token that was already used ends the whole session (a stolen copy is worth nothing once
  either party refreshes);
- the ``lb_session`` cookie value for browsers, valid while the session lives.

A session lives ``session_ttl`` (12 h) after its last login/refresh and ends on logout or
when its account disappears.  With a ``path`` the sessions (token *hashes* only) are saved
there (0600) on every change, so a ground restart does not log everyone out; without
one they live in memory.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ground.auth.accounts import check_private, write_private

log = logging.getLogger("ground.auth")

ACCESS_TTL = 600.0
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 10000


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    """One login: the account name and the current token hashes."""

    id: str
    user: str
    client: str
    created: float
    expires: float
    access_hash: str = ""
    access_expires: float = 0.0
    refresh_hash: str = ""
    cookie_hash: str = ""
    used_refresh: set[str] = field(default_factory=set)


@dataclass
class Tokens:
    """The plaintext tokens of one login or refresh (returned once, never stored)."""

    access: str
    refresh: str
    cookie: str
    expires_in: float
    session: Session


class Sessions:
    """All live sessions of one ground."""

    def __init__(self, access_ttl: float = ACCESS_TTL, session_ttl: float = SESSION_TTL,
                 clock: Callable[[], float] = time.time, path: str | Path | None = None) -> None:
        self.access_ttl, self.session_ttl, self.clock = access_ttl, session_ttl, clock
        self.path = Path(path) if path is not None else None
        self.sessions: dict[str, Session] = {}
        self._access: dict[str, str] = {}    # token hash -> session id
        self._refresh: dict[str, str] = {}
        self._cookie: dict[str, str] = {}
        self._used: dict[str, str] = {}      # spent refresh hash -> session id (reuse detection)
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        check_private(self.path)  # InsecureFile: the ground refuses to start on it
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))
            for d in rows:
                s = Session(str(d["id"]), str(d["user"]), str(d["client"]), float(d["created"]),
                            float(d["expires"]), str(d["access_hash"]), float(d["access_expires"]),
                            str(d["refresh_hash"]), str(d.get("cookie_hash", "")),
                            {str(h) for h in d.get("used_refresh", [])})
                self._index(s)
        except (ValueError, TypeError, KeyError) as e:  # a damaged file logs everyone out, nothing worse
            log.warning("%s: unreadable (%s); starting without sessions", self.path, e)
            for table in (self.sessions, self._access, self._refresh, self._cookie, self._used):
                table.clear()
        self.purge()

    def _index(self, s: Session) -> None:
        self.sessions[s.id] = s
        self._access[s.access_hash] = s.id
        self._refresh[s.refresh_hash] = s.id
        if s.cookie_hash:
            self._cookie[s.cookie_hash] = s.id
        for h in s.used_refresh:
            self._used[h] = s.id

    def _save(self) -> None:
        if self.path is None:
            return
        rows = [dict(dataclasses.asdict(s), used_refresh=sorted(s.used_refresh)) for s in self.sessions.values()]
        with contextlib.suppress(OSError):  # a full disk must not break a login; restart logs out then
            write_private(self.path, json.dumps(rows))

    def _issue(self, s: Session, cookie: bool) -> Tokens:
        now = self.clock()
        self._access.pop(s.access_hash, None)
        self._refresh.pop(s.refresh_hash, None)
        access, refresh = "lba_" + secrets.token_urlsafe(32), "lbr_" + secrets.token_urlsafe(32)
        s.access_hash, s.access_expires = _h(access), now + self.access_ttl
        s.refresh_hash = _h(refresh)
        s.expires = now + self.session_ttl
        self._access[s.access_hash] = s.id
        self._refresh[s.refresh_hash] = s.id
        ck = ""
        if cookie:
            ck = "lbs_" + secrets.token_urlsafe(32)
            self._cookie.pop(s.cookie_hash, None)
            s.cookie_hash = _h(ck)
            self._cookie[s.cookie_hash] = s.id
        return Tokens(access, refresh, ck, self.access_ttl, s)

    def login(self, user: str, client: str) -> Tokens:
        """A new session for ``user`` (already authenticated)."""
        self.purge()
        if len(self.sessions) >= MAX_SESSIONS:  # bounded: drop the oldest
            oldest = min(self.sessions.values(), key=lambda s: s.created)
            self.end(oldest)
        now = self.clock()
        s = Session(secrets.token_hex(8), user, client, now, now + self.session_ttl)
        self.sessions[s.id] = s
        t = self._issue(s, cookie=True)
        self._save()
        return t

    def refresh(self, token: str) -> Tokens | None:
        """A new access+refresh pair for a live refresh token; None otherwise.

        A refresh token presented twice ends its session (theft or a confused client).
        """
        h = _h(token)
        sid = self._refresh.get(h)
        if sid is None:
            stolen = self._used.pop(h, None)
            if stolen is not None and stolen in self.sessions:
                self.end(self.sessions[stolen])
            return None
        s = self.sessions.get(sid)
        if s is None or s.expires < self.clock():
            if s is not None:
                self.end(s)
            return None
        self._used[h] = s.id
        s.used_refresh.add(h)
        t = self._issue(s, cookie=False)
        self._save()
        return t

    def by_access(self, token: str) -> tuple[Session | None, str]:
        """(session, "") for a live access token, else (None, reason)."""
        s = self.sessions.get(self._access.get(_h(token), ""))
        if s is None:
            return None, "unknown or revoked access token"
        now = self.clock()
        if s.access_expires < now or s.expires < now:
            return None, "access token expired: refresh or log in again"
        return s, ""

    def by_cookie(self, token: str) -> Session | None:
        s = self.sessions.get(self._cookie.get(_h(token), ""))
        if s is None or s.expires < self.clock():
            return None
        return s

    def end(self, s: Session) -> None:
        """Log the session out: every token of it stops working."""
        self.sessions.pop(s.id, None)
        self._access.pop(s.access_hash, None)
        self._refresh.pop(s.refresh_hash, None)
        self._cookie.pop(s.cookie_hash, None)
        for h in s.used_refresh:
            self._used.pop(h, None)
        self._save()

    def end_user(self, user: str) -> int:
        """End every session of ``user`` (account removed or password changed)."""
        mine = [s for s in self.sessions.values() if s.user == user]
        for s in mine:
            self.end(s)
        return len(mine)

    def purge(self) -> None:
        now = self.clock()
        for s in [s for s in self.sessions.values() if s.expires < now]:
            self.end(s)


class LoginLimiter:
    """Failed logins per account and per client address in a sliding window.

    After ``per_account`` failures for one name, or ``per_address`` from one address,
    within ``window`` s, further attempts are refused (even with the right password) until
    the oldest failure ages out.  Memory is bounded (``max_keys``, oldest dropped).
    """

    def __init__(self, per_account: int = 5, per_address: int = 20, window: float = 300.0,
                 max_keys: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_account, self.per_address, self.window = per_account, per_address, window
        self.max_keys, self.clock = max_keys, clock
        self._fails: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, key: str) -> collections.deque[float]:
        q = self._fails.get(key)
        if q is None:
            return collections.deque()
        cut = self.clock() - self.window
        while q and q[0] < cut:
            q.popleft()
        if not q:
            self._fails.pop(key, None)
        return q

    def retry_after(self, user: str, address: str) -> float:
        """0 when an attempt may go ahead, else the seconds until one may."""
        waits = []
        for key, limit in ((f"u:{user}", self.per_account), (f"a:{address}", self.per_address)):
            q = self._recent(key)
            if len(q) >= limit:
                waits.append(q[0] + self.window - self.clock())
        return max(waits, default=0.0)

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        for key in (f"u:{user}", f"a:{address}"):
            q = self._fails.setdefault(key, collections.deque(maxlen=max(self.per_account, self.per_address)))
            q.append(now)
            self._fails.move_to_end(key)
        while len(self._fails) > self.max_keys:
            self._fails.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._fails.pop(f"u:{user}", None)

"""Python client of the ground's interface (docs/ground-api.md): the console and scripts use it.

    async with GroundClient("http://127.0.0.1:8700", user="alice", password="...") as g:
        nodes = await g.nodes()
        cmd = await g.send_command("n01", "PING")
        done = await g.command(cmd["id"], wait=10)
        async for msg in g.live():          # reconnects by itself when the ground restarts
            ...

Credentials: ``token=`` (an API key), ``user=``+``password=``, or ``credentials=`` from
``ground.auth.credentials.load_credentials`` (environment, credentials file, prompt); with
none given the environment and the credentials file are tried.  The client logs in on its
first request, sends ``Authorization: Bearer`` on every one, refreshes an expired access
token (or logs in again) once on a 401, and does the same before each WebSocket reconnect.

Errors (ground/errors.py): ``ApiError`` (the ground answered 4xx/5xx; ``status`` and the
ground's message) and its subclass ``GroundUnavailable`` (no connection).  ``live()`` never raises on disconnect: it
yields ``{"type": "disconnected"}`` and keeps trying; each (re)connection starts with a
``{"type": "snapshot", ...}`` message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from ground.auth.credentials import Credentials, load_credentials
from ground.client_types import (
    Alarm,
    CommandRow,
    Event,
    GapsView,
    LatestView,
    LinkCounters,
    NodeView,
    PacketRow,
    ParamHistory,
    SeismicView,
)
from ground.errors import ApiError, GroundUnavailable
from ground.errors import GroundError as GroundError  # the root, re-exported for callers of the client


class GroundClient:
    """Async client for one ground (``url`` like ``http://127.0.0.1:8700``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, user: str | None = None, password: str | None = None,
                 token: str | None = None, credentials: Credentials | None = None, ca: str | None = None) -> None:
        """``ca``: for an https:// ground, the CA (PEM) its certificate must chain to (default: the system's)."""
        self.url = url.rstrip("/")
        self.creds = credentials if credentials is not None else Credentials(user, password, token)
        self.user = self.creds.user or user or ""   # the account name once logged in
        self.roles: list[str] = []
        self.ca = ca
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._access: str | None = None
        self._refresh: str | None = None
        self._login_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> GroundClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = None
            if self.url.startswith("https:"):
                import ssl

                conn = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=self.ca))  # verified, never off
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=conn)
        return self._session

    async def _raw(self, method: str, path: str, params: dict[str, Any] | None = None,
                   body: dict[str, Any] | None = None, timeout: float | None = None,
                   token: str | None = None) -> Any:
        p = {k: str(v) for k, v in (params or {}).items() if v is not None}
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout)
        if token:
            kw["headers"] = {"Authorization": f"Bearer {token}"}
        if method != "GET" and body is None:
            body = {}  # state changes are always JSON
        try:
            async with self._s().request(method, self.url + path, params=p, json=body, **kw) as r:
                text = await r.text()
                try:
                    data = json.loads(text) if text else None
                except ValueError:
                    data = None
                if r.status >= 400:
                    raise ApiError(r.status, (data or {}).get("error", text) if isinstance(data, dict) else text)
                return data
        except aiohttp.ClientConnectionError as e:
            raise GroundUnavailable(0, f"{self.url}: {e}") from None

    async def login(self, force: bool = False) -> None:
        """Get an access token (refresh, API key or password login); ApiError 401 if refused."""
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            if self._access and not force:
                return
            if not self.creds:
                found = load_credentials(self.url, user=self.creds.user)
                if not found:
                    try:  # an unreachable ground is the more useful thing to report
                        await self._raw("GET", "/api/auth/me")
                    except GroundUnavailable:
                        raise
                    except ApiError:
                        pass
                    raise ApiError(401, f"no credential for {self.url}: pass user/password or token, set "
                                      "LUNABASE_TOKEN (or LUNABASE_USER + LUNABASE_PASSWORD), or run lunabase login")
                self.creds = found
            if self.creds.token:
                self._access = self.creds.token
                me = await self._raw("GET", "/api/auth/me", token=self._access)
                self.user, self.roles = me["name"], list(me["roles"])
                return
            if self._refresh:
                try:
                    r = await self._raw("POST", "/api/auth/refresh", body={"refresh_token": self._refresh})
                except ApiError as e:
                    if isinstance(e, GroundUnavailable):
                        raise
                    r = None
                if r is not None:
                    self._take(r)
                    return
            r = await self._raw("POST", "/api/auth/login",
                                body={"username": self.creds.user, "password": self.creds.password})
            self._take(r)

    async def access_token(self) -> str:
        """A current access token (logging in if needed), e.g. for a WebSocket's first message."""
        if not self._access:
            await self.login()
        assert self._access is not None
        return self._access

    def _take(self, r: dict[str, Any]) -> None:
        self._access, self._refresh = r["access_token"], r["refresh_token"]
        self.user, self.roles = r["user"]["name"], list(r["user"]["roles"])

    async def logout(self) -> None:
        if self._access and not self.creds.token:
            try:
                await self._raw("POST", "/api/auth/logout", token=self._access)
            except ApiError:
                pass
        self._access = self._refresh = None

    async def _req(self, method: str, path: str, params: dict[str, Any] | None = None,
                   body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        if not self._access:
            await self.login()
        token = self._access
        try:
            return await self._raw(method, path, params, body, timeout, token)
        except ApiError as e:
            if e.status != 401 or isinstance(e, GroundUnavailable):
                raise
        if self._access == token:  # expired or the ground restarted: once more with a fresh token
            self._access = None
            await self.login()
        return await self._raw(method, path, params, body, timeout, self._access)

    async def me(self) -> dict[str, Any]:
        return await self._req("GET", "/api/auth/me")

    async def create_key(self, password: str, label: str = "") -> dict[str, Any]:
        """Mint an API key for this account ({id, key, label}); the key is shown only here."""
        return await self._req("POST", "/api/auth/keys", body={"password": password, "label": label})

    # -- reads ------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._req("GET", "/api/health")

    async def nodes(self) -> list[NodeView]:
        return await self._req("GET", "/api/nodes")

    async def latest(self, node: str) -> LatestView:
        return await self._req("GET", "/api/latest", {"node": node})

    async def params(self, node: str, packet: str, field: str, since: float | None = None,
                     until: float | None = None, limit: int = 1000) -> ParamHistory:
        return await self._req("GET", "/api/params", {"node": node, "packet": packet, "field": field,
                                                      "since": since, "until": until, "limit": limit})

    async def alarms(self, all: bool = False) -> list[Alarm]:
        return await self._req("GET", "/api/alarms", {"all": "1" if all else None})

    async def events(self, since: float | None = None, limit: int = 200, node: str | None = None,
                     kind: str | None = None, after_id: int | None = None) -> list[Event]:
        return await self._req("GET", "/api/events", {"since": since, "limit": limit, "node": node,
                                                      "kind": kind, "after_id": after_id})

    async def dictionary(self) -> dict[str, Any]:
        return await self._req("GET", "/api/dictionary")

    async def commands(self, limit: int = 200) -> list[CommandRow]:
        return await self._req("GET", "/api/commands", {"limit": limit})

    async def command(self, cid: int, wait: float | None = None) -> CommandRow:
        """One command; with ``wait`` the ground holds the answer until a final stage (or wait s)."""
        return await self._req("GET", f"/api/commands/{cid}", {"wait": wait},
                               timeout=(wait + 10.0) if wait else None)

    async def packets(self, node: str, limit: int = 20) -> list[PacketRow]:
        return await self._req("GET", "/api/packets", {"node": node, "limit": limit})

    async def links(self) -> dict[str, LinkCounters]:
        return await self._req("GET", "/api/links")

    async def gaps(self, node: str | None = None, state: str | None = None, limit: int = 200) -> GapsView:
        """Sequence gaps (newest first) and the automatic refill's state."""
        return await self._req("GET", "/api/gaps", {"node": node, "state": state, "limit": limit})

    async def seismic(self, node: str, seconds: float = 60.0, max_points: int = 2000) -> SeismicView:
        return await self._req("GET", "/api/seismic", {"node": node, "seconds": seconds, "max_points": max_points})

    # -- actions ----------------------------------------------------------------------------

    # Actions are recorded under the logged-in account; ``user`` (kept for old callers) is
    # sent only when given, and the ground refuses it (403) if it names another account.

    async def ack(self, alarm_id: int, user: str | None = None) -> Alarm:
        return await self._req("POST", f"/api/alarms/{alarm_id}/ack", body=_who(user))

    async def shelve(self, alarm_id: int, minutes: float, user: str | None = None) -> Alarm:
        return await self._req("POST", f"/api/alarms/{alarm_id}/shelve", body={"minutes": minutes, **_who(user)})

    async def unshelve(self, alarm_id: int, user: str | None = None) -> Alarm:
        return await self._req("POST", f"/api/alarms/{alarm_id}/unshelve", body=_who(user))

    async def send_command(self, node: str, command: str, args: dict[str, Any] | None = None, *,
                           confirm: bool = False, user: str | None = None, not_before: float | None = None,
                           not_after: float | None = None) -> CommandRow:
        """Submit a command; returns its row ({id, stage, ...}).  ApiError 400/403 if refused.

        Under the two-person rule the row comes back AWAITING_APPROVAL.
        """
        return await self._req("POST", "/api/commands", body={
            "node": node, "command": command, "args": args or {}, "confirm": confirm,
            "not_before": not_before, "not_after": not_after, **_who(user)})

    async def cancel_command(self, cid: int, user: str | None = None) -> CommandRow:
        return await self._req("POST", f"/api/commands/{cid}/cancel", body=_who(user))

    async def approve_command(self, cid: int) -> CommandRow:
        """Approve another account's command awaiting approval (403 for one's own)."""
        return await self._req("POST", f"/api/commands/{cid}/approve", body={})

    async def deny_command(self, cid: int, reason: str = "") -> CommandRow:
        return await self._req("POST", f"/api/commands/{cid}/deny", body={"reason": reason})

    # -- live -------------------------------------------------------------------------------

    async def live(self, retry: float = 0.5, max_retry: float = 5.0) -> AsyncGenerator[dict[str, Any], None]:
        """Live messages from the ground, forever; reconnects with backoff on any failure."""
        delay = retry
        connected = False
        while True:
            try:
                if not self._access:
                    await self.login()
                async with self._s().ws_connect(self.url + "/api/ws", heartbeat=20.0,
                                                headers={"Authorization": f"Bearer {self._access}"},
                                                timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:  # pyright: ignore[reportCallIssue]
                    connected, delay = True, retry
                    async for m in ws:
                        if m.type == aiohttp.WSMsgType.TEXT:
                            yield json.loads(m.data)
                        elif m.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except aiohttp.WSServerHandshakeError as e:
                if e.status == 401:
                    self._access = None  # log in again before the next attempt
            except ApiError as e:
                if e.status in (400, 401, 403, 429) and not isinstance(e, GroundUnavailable):
                    yield {"type": "error", "status": e.status, "error": e.message}
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            if connected:
                connected = False
                yield {"type": "disconnected"}
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry)


def _who(user: str | None) -> dict[str, Any]:
    return {"user": user} if user else {}

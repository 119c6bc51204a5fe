"""Python client of the ground's interface (docs/ground-api.md): the console and scripts use it.

    async with GroundClient("http://127.0.0.1:8700") as g:
        nodes = await g.nodes()
        cmd = await g.send_command("n01", "PING")
        done = await g.command(cmd["id"], wait=10)
        async for msg in g.live():          # reconnects by itself when the ground restarts
            ...

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

from ground.errors import ApiError, GroundUnavailable
from ground.errors import GroundError as GroundError  # the root, re-exported for callers of the client


class GroundClient:
    """Async client for one ground (``url`` like ``http://127.0.0.1:8700``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, user: str = "operator", ca: str | None = None) -> None:
        """``ca``: for an https:// ground, the CA (PEM) its certificate must chain to (default: the system's)."""
        self.url = url.rstrip("/")
        self.user = user
        self.ca = ca
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

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

    async def _req(self, method: str, path: str, params: dict[str, Any] | None = None,
                   body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        p = {k: str(v) for k, v in (params or {}).items() if v is not None}
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._s().request(method, self.url + path, params=p, json=body, **kw) as r:
                text = await r.text()
                data = json.loads(text) if text else None
                if r.status >= 400:
                    raise ApiError(r.status, (data or {}).get("error", text) if isinstance(data, dict) else text)
                return data
        except aiohttp.ClientConnectionError as e:
            raise GroundUnavailable(0, f"{self.url}: {e}") from None

    # -- reads ------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._req("GET", "/api/health")

    async def nodes(self) -> list[dict[str, Any]]:
        return await self._req("GET", "/api/nodes")

    async def latest(self, node: str) -> dict[str, Any]:
        return await self._req("GET", "/api/latest", {"node": node})

    async def params(self, node: str, packet: str, field: str, since: float | None = None,
                     until: float | None = None, limit: int = 1000) -> dict[str, Any]:
        return await self._req("GET", "/api/params", {"node": node, "packet": packet, "field": field,
                                                      "since": since, "until": until, "limit": limit})

    async def alarms(self, all: bool = False) -> list[dict[str, Any]]:
        return await self._req("GET", "/api/alarms", {"all": "1" if all else None})

    async def events(self, since: float | None = None, limit: int = 200, node: str | None = None,
                     kind: str | None = None, after_id: int | None = None) -> list[dict[str, Any]]:
        return await self._req("GET", "/api/events", {"since": since, "limit": limit, "node": node,
                                                      "kind": kind, "after_id": after_id})

    async def dictionary(self) -> dict[str, Any]:
        return await self._req("GET", "/api/dictionary")

    async def commands(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self._req("GET", "/api/commands", {"limit": limit})

    async def command(self, cid: int, wait: float | None = None) -> dict[str, Any]:
        """One command; with ``wait`` the ground holds the answer until a final stage (or wait s)."""
        return await self._req("GET", f"/api/commands/{cid}", {"wait": wait},
                               timeout=(wait + 10.0) if wait else None)

    async def packets(self, node: str, limit: int = 20) -> list[dict[str, Any]]:
        return await self._req("GET", "/api/packets", {"node": node, "limit": limit})

    async def links(self) -> dict[str, Any]:
        return await self._req("GET", "/api/links")

    async def seismic(self, node: str, seconds: float = 60.0, max_points: int = 2000) -> dict[str, Any]:
        return await self._req("GET", "/api/seismic", {"node": node, "seconds": seconds, "max_points": max_points})

    # -- actions ----------------------------------------------------------------------------

    async def ack(self, alarm_id: int, user: str | None = None) -> dict[str, Any]:
        return await self._req("POST", f"/api/alarms/{alarm_id}/ack", body={"user": user or self.user})

    async def shelve(self, alarm_id: int, minutes: float, user: str | None = None) -> dict[str, Any]:
        return await self._req("POST", f"/api/alarms/{alarm_id}/shelve",
                               body={"minutes": minutes, "user": user or self.user})

    async def unshelve(self, alarm_id: int, user: str | None = None) -> dict[str, Any]:
        return await self._req("POST", f"/api/alarms/{alarm_id}/unshelve", body={"user": user or self.user})

    async def send_command(self, node: str, command: str, args: dict[str, Any] | None = None, *,
                           confirm: bool = False, user: str | None = None, not_before: float | None = None,
                           not_after: float | None = None) -> dict[str, Any]:
        """Submit a command; returns its row ({id, stage, ...}).  GroundError 400 if refused."""
        return await self._req("POST", "/api/commands", body={
            "node": node, "command": command, "args": args or {}, "user": user or self.user,
            "confirm": confirm, "not_before": not_before, "not_after": not_after})

    async def cancel_command(self, cid: int, user: str | None = None) -> dict[str, Any]:
        return await self._req("POST", f"/api/commands/{cid}/cancel", body={"user": user or self.user})

    # -- live -------------------------------------------------------------------------------

    async def live(self, retry: float = 0.5, max_retry: float = 5.0) -> AsyncGenerator[dict[str, Any], None]:
        """Live messages from the ground, forever; reconnects with backoff on any failure."""
        delay = retry
        connected = False
        while True:
            try:
                async with self._s().ws_connect(self.url + "/api/ws", heartbeat=20.0,
                                                timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:  # pyright: ignore[reportCallIssue]
                    connected, delay = True, retry
                    async for m in ws:
                        if m.type == aiohttp.WSMsgType.TEXT:
                            yield json.loads(m.data)
                        elif m.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            if connected:
                connected = False
                yield {"type": "disconnected"}
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry)

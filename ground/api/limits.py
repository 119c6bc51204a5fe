"""Connection caps of the client interface: per client address and in total.

aiohttp has no connection limit of its own, so every TCP connection (idle keep-alive
or WebSocket) costs the ground a descriptor until the process runs out of them and
cannot even accept its own operators.  ``LimitedSite`` puts a gate in front of each
connection: beyond ``max_total`` open connections, or ``max_per_client`` from one address,
a new connection is closed at once (counted in ``refused``), the way mosquitto's
``max_connections`` does.  The caps sit well under the usual 1,024-descriptor limit.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, cast

from aiohttp import web

MAX_TOTAL = 512
MAX_PER_CLIENT = 128


class ConnectionLimiter:
    """Counts open connections per address; ``admit``/``release`` around each one."""

    def __init__(self, max_total: int = MAX_TOTAL, max_per_client: int = MAX_PER_CLIENT) -> None:
        self.max_total, self.max_per_client = max_total, max_per_client
        self.open: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.refused = 0

    def admit(self, addr: str) -> bool:
        if self.total >= self.max_total or self.open[addr] >= self.max_per_client:
            self.refused += 1
            return False
        self.total += 1
        self.open[addr] += 1
        return True

    def release(self, addr: str) -> None:
        self.total -= 1
        self.open[addr] -= 1
        if self.open[addr] <= 0:
            del self.open[addr]

    def stats(self) -> dict[str, Any]:
        return {"open": self.total, "clients": len(self.open), "refused": self.refused,
                "max_total": self.max_total, "max_per_client": self.max_per_client}


class _Gate(asyncio.Protocol):
    """Forwards to aiohttp's protocol for admitted connections; closes the others at once."""

    def __init__(self, limiter: ConnectionLimiter, inner: Any) -> None:
        self.limiter, self.inner = limiter, inner
        self.addr: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        addr = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
        if not self.limiter.admit(addr):
            cast("asyncio.Transport", transport).abort()
            return
        self.addr = addr
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.addr is not None:
            self.limiter.release(self.addr)
            self.addr = None
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.addr is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.addr is not None else None

    def pause_writing(self) -> None:
        if self.addr is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.addr is not None:
            self.inner.resume_writing()


class LimitedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass a ``ConnectionLimiter`` first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limiter: ConnectionLimiter,
                 **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.limiter = limiter

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gate(self.limiter, server()), self._host, self._port, reuse_address=self._reuse_address,
            ssl=self._ssl_context)
        self._bound_port = self.bound_port

    @property
    def bound_port(self) -> int:
        server = cast("asyncio.Server | None", self._server)
        assert server is not None
        return server.sockets[0].getsockname()[1]

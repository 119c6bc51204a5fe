"""The real ground segment (``ground.service.GroundService``) for synchronous HIL tests.

    with GdsThread(broker_url, inventory, workdir) as gds:
        gds.api.await_telemetry(lambda s: s.packet == "HK", timeout=30)   # -> the Sample
        gds.api.send_and_assert_command("n01", "PING", timeout=30)
        gds.api.assert_no_alarm(node="n01")

The service runs on its own event loop thread; ``api`` wraps ``ground.testing.GroundTestAPI``
so each call runs on that loop and blocks until it is done (coroutines and plain methods alike).

``remote`` is the same helper set over the ground's client interface, logged in like every
client: the ground gets an accounts file in ``workdir`` (0600) with ``hil`` (operator) and
``hil-commander`` (commander) holding random passwords (``accounts`` maps name -> password),
and ``remote`` is ``ground.testing.RemoteGroundTestAPI`` logged in as ``hil``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from typing import Any

__all__ = ["GdsThread"]


class _SyncProxy:
    """Calls the wrapped object's methods on `loop`, blocking for the result."""

    def __init__(self, obj: Any, loop: asyncio.AbstractEventLoop, timeout: float = 600.0) -> None:
        self._obj, self._loop, self._timeout = obj, loop, timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            async def run() -> Any:
                r = attr(*args, **kw)
                return await r if inspect.isawaitable(r) else r

            return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self._timeout)

        return call


class GdsThread:
    """GroundService (sqlite archive in `workdir`, light time 0, API on a free port) on a thread."""

    def __init__(self, broker_url: str, inventory: Any, workdir: str | Path, light_time: float = 0.0) -> None:
        self.broker_url, self.inventory, self.workdir = broker_url, inventory, Path(workdir)
        self.light_time = light_time
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hil gds", daemon=True)
        self.service: Any = None
        self.api: Any = None
        self.remote: Any = None
        self._remote: Any = None
        self.url = ""
        self.accounts: dict[str, str] = {}

    def start(self, timeout: float = 30.0) -> GdsThread:
        import secrets

        from ground.auth import AccountStore
        from ground.service import GroundService
        from ground.testing import GroundTestAPI, RemoteGroundTestAPI

        self.thread.start()
        self.workdir.mkdir(parents=True, exist_ok=True)
        users = AccountStore.open(self.workdir / "users.json", create=True)
        for name, role in (("hil", "operator"), ("hil-commander", "commander")):
            pw = self.accounts[name] = secrets.token_urlsafe(16)
            if name in users.users:
                users.set_password(name, pw, by="hil")
            else:
                users.add(name, pw, [role], by="hil")

        async def go() -> Any:
            s = GroundService(self.broker_url, self.inventory, archive=f"sqlite:///{self.workdir / 'archive.db'}",
                              api_port=0, light_time=self.light_time, users=users)  # fmt: skip
            await s.start()
            await s.wait_connected(timeout)
            return s

        try:
            self.service = asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout + 10)
        except BaseException:
            self.stop()
            raise
        self.api = _SyncProxy(GroundTestAPI(self.service.ops), self.loop)
        self.url = self.service.api.url
        self._remote = RemoteGroundTestAPI(self.url, "hil", self.accounts["hil"])
        self.remote = _SyncProxy(self._remote, self.loop)
        return self

    def stop(self) -> None:
        try:
            if self.remote is not None:
                asyncio.run_coroutine_threadsafe(self._remote.close(), self.loop).result(10)
                self.remote = None
            if self.service is not None:
                asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        finally:
            self.service = None
            if self.thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(10)
            if not self.loop.is_running():
                self.loop.close()

    def __enter__(self) -> GdsThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

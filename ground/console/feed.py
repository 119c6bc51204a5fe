"""The console's only network path: keeps a ``BaseModel`` in step with the ground.

``Feed.run()`` is one asyncio task (started by the App; it never blocks the UI):

* snapshot: dictionary, nodes, alarms, events, commands, links (GET);
* live: ``async for msg in client.live()`` folds every pushed message into the model;
* poll: every ``poll_s`` it re-reads nodes / alarms / links / health / events — a cheap
  safety net for pushes lost while reconnecting, and the console's liveness probe:
  when a poll fails the connection shows "reconnecting" until the ground answers again.

The client is anything with the ``GroundClient`` coroutine methods (ground/client.py);
tests may pass a fake.  Screens ask for on-demand data (latest values, history, packets,
seismic) through ``Feed.call`` which returns None instead of raising when the ground is
away, so a widget just keeps its last picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ground.console.model import BaseModel

log = logging.getLogger(__name__)


class Feed:
    """Pump data from a ground client into a model; see module docstring."""

    def __init__(self, client: Any, model: BaseModel, poll_s: float = 2.0) -> None:
        self.client = client
        self.model = model
        self.poll_s = poll_s
        self._tasks: list[asyncio.Task[None]] = []
        self.last_ok = 0.0
        self.last_error = ""  # the ground's reason for the last refused call (e.g. a 403)

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<name>(*args, **kwargs)``, or None (logged) when it fails."""
        fn: Callable[..., Awaitable[Any]] | None = getattr(self.client, name, None)
        if fn is None:
            log.warning("ground client has no %s()", name)
            return None
        try:
            res = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # network errors of any flavour: the poll loop reports them
            log.debug("%s failed: %r", name, e)
            self.last_error = str(getattr(e, "message", e))
            return None
        return res

    def start(self) -> None:
        """Start the live and poll tasks on the running loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._live(), name="console-live"),
                       loop.create_task(self._poll(), name="console-poll")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:
                pass

    async def snapshot(self) -> bool:
        """Read everything once; True when the ground answered."""
        m = self.model
        d = await self.call("dictionary")
        if d is None:
            return False
        m.set_dictionary(d)
        await self._refresh(full=True)
        return True

    async def _refresh(self, full: bool = False) -> bool:
        m = self.model
        nodes = await self.call("nodes")
        if nodes is None:
            return False
        m.set_nodes(nodes)
        alarms = await self.call("alarms")
        if alarms is not None:
            m.set_alarms(alarms)
        links = await self.call("links")
        if links is not None:
            m.set_links(links)
        health = await self.call("health")
        if health is not None:
            m.set_health(health)
        if m.max_event_id is not None and not full:
            events = await self.call("events", limit=200, after_id=m.max_event_id)
        else:
            events = await self.call("events", limit=200)
        if events is not None:
            m.add_events(events)
        if full:
            cmds = await self.call("commands")
            if cmds is not None:
                m.set_commands(cmds)
        return True

    async def _poll(self) -> None:
        m = self.model
        while True:
            if not m.dictionary:
                ok = await self.snapshot()
            else:
                ok = await self._refresh(full=m.conn.state != "live")
            if ok:
                self.last_ok = time.time()
                if m.conn.state != "live":
                    m.set_connection("live")
            else:
                m.set_connection("reconnecting", "ground not answering")
            await asyncio.sleep(self.poll_s if ok else min(self.poll_s, 1.0))

    async def _live(self) -> None:
        m = self.model
        while True:
            try:
                async for msg in self.client.live():
                    if isinstance(msg, dict):
                        if msg.get("type") == "resync":  # the ground dropped pushes for us: re-read
                            await self._refresh(full=True)
                            continue
                        if msg.get("type") in ("connected", "hello", "pong"):
                            m.set_connection("live")
                            continue
                        if msg.get("type") in ("disconnected", "reconnecting"):
                            m.set_connection("reconnecting", str(msg.get("error", "")))
                            continue
                        m.apply(msg)
                        if m.conn.state != "live":
                            m.set_connection("live")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                m.set_connection("reconnecting", f"{type(e).__name__}: {e}")
            await asyncio.sleep(1.0)

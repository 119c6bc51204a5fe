"""Fan-out of live messages to many WebSocket clients without ever blocking ingest.

Each subscriber has a bounded queue.  ``publish`` never waits: a subscriber whose queue
is full is *dropped and resynced*: its queue is emptied and replaced by one
``{"type": "resync"}`` message, after which the client re-reads state over HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

Message = dict[str, Any]


class Subscriber:
    """One live client's queue; ``get()`` the next message."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize)
        self.dropped = 0  # messages discarded by resyncs
        self.resyncs = 0

    async def get(self) -> Message:
        return await self.queue.get()


class Hub:
    """Publish/subscribe of JSON-able dicts."""

    def __init__(self, maxsize: int = 2000) -> None:
        self.maxsize = maxsize
        self.subscribers: set[Subscriber] = set()

    def subscribe(self) -> Subscriber:
        s = Subscriber(self.maxsize)
        self.subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    def publish(self, msg: Message) -> None:
        for s in list(self.subscribers):
            try:
                s.queue.put_nowait(msg)
            except asyncio.QueueFull:
                s.dropped += s.queue.qsize()
                s.resyncs += 1
                while not s.queue.empty():
                    s.queue.get_nowait()
                s.queue.put_nowait({"type": "resync", "dropped": s.dropped})

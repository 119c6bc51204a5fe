"""The MQTT side of ingest: an aiomqtt subscriber that acknowledges after the commit.

Crash safety: the worker connects with a persistent session (MQTT 3.1.1
``clean_session=False``, the default, or MQTT 5 ``clean_start=False`` with a session expiry
interval), so the broker keeps its subscriptions and queues QoS 1 messages while it is
away.  paho's manual-ack mode is switched on (aiomqtt exposes no switch; we call
``manual_ack_set`` on its paho client before connecting), so a PUBACK leaves only after
the archive transaction holding that message committed.  A SIGKILL therefore loses at
most messages the broker still considers unacknowledged; it redelivers them to the
restarted worker (same client id), and the archive's unique key drops the copies that
had committed.  Acks are sent in arrival order (MQTT 5 §4.6) and only on the
connection the message arrived on: after a reconnect, packet ids are reused, so a stale
ack could acknowledge a different, uncommitted message.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import struct
import time
from collections.abc import Collection, Iterable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ground.archive import Archive
from ground.ingest._pipeline import IngestSink, Pipeline
from ground.ratelog import RateLimitedLog
from wire import topics

log = logging.getLogger("lunabase.ingest")

TM_FILTER = f"{topics.PREFIX}/+/+/{topics.TM}"
STATUS_FILTER = f"{topics.PREFIX}/+/+/{topics.STATUS}"


_RECV_BYTES = 256 * 1024  # one recv() per socket wake-up serves every MQTT packet it holds
_PUBACK = 0x40


class _Inbox:
    """PUBLISH messages taken straight from paho, in arrival order: (topic, payload, mid, qos, retain).

    ``retain`` is the flag as delivered: set when the broker sends a *retained* message
    because of our (re)subscription (a node's birth from before we connected), clear for a
    message forwarded as it is published (MQTT 3.1.1 §3.3.1.3).
    """

    def __init__(self) -> None:
        self.items: collections.deque[tuple[str, bytes, int, int, bool]] = collections.deque()
        self.wake = asyncio.Event()

    def put(self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool = False) -> None:
        # an invalid UTF-8 topic becomes one the pipeline quarantines (bad_topic), never an exception here
        self.items.append((topic.decode("utf-8", "replace"), payload, mid, qos, retain))
        self.wake.set()


def _install_fast_path(client: aiomqtt.Client, inbox: _Inbox) -> bool:
    """Take PUBLISH packets from paho into ``inbox`` with as little work per message as possible.

    Where the time went (docs/ground-data.md, profiled under ``lunabase bench ingest``):
    paho reads a packet with 3-4 ``recv`` calls (type byte, length bytes, body), matches
    every topic against its per-topic callback trie, and aiomqtt wraps each message in a
    ``Message`` and a validated ``Topic`` and passes it through an ``asyncio.Queue`` --
    about half of the ingest's CPU with one packet per message.  Here:

    * one ``recv`` of up to 256 KiB per socket wake-up; paho's packet reader is served
      from that buffer, and every packet in it is read in the same wake-up;
    * a PUBLISH (MQTT 3.1.1, QoS 0/1) is decoded in place and appended to ``inbox``;
      MQTT 5 and QoS 2 go through paho's own decoder and land in ``inbox`` as well.

    Connection handling, keepalive, SUBSCRIBE/SUBACK, TLS and the session stay paho's and
    aiomqtt's.  False (the caller logs it and uses aiomqtt's own reading) if paho's
    internals differ from what this expects.
    """
    paho = client._client
    sock = paho.socket()
    names = ("_packet_read", "_loop_rc_handle", "_sock_recv", "_handle_publish", "_in_packet", "_packet_queue",
             "_protocol")
    if sock is None or not all(hasattr(paho, n) for n in names):
        return False
    read, handle = paho._packet_read, paho._loop_rc_handle
    sock_recv, handle_publish = paho._sock_recv, paho._handle_publish
    v311 = paho._protocol != 5  # paho's MQTTv5 == 5
    buf = b""
    pos = 0

    def buffered_recv(bufsize: int) -> bytes:
        nonlocal buf, pos
        if pos >= len(buf):
            data = sock_recv(_RECV_BYTES)  # BlockingIOError (nothing to read) goes to paho as before
            if not data:
                return data  # EOF: paho ends the session
            buf, pos = data, 0
        out = buf[pos:pos + bufsize]
        pos += len(out)
        return out

    def fast_publish() -> Any:
        pkt = paho._in_packet["packet"]  # the body after the fixed header
        cmd = paho._in_packet["command"]
        qos = (cmd & 0x06) >> 1
        n = len(pkt)
        if v311 and qos < 2 and n >= 2:
            tl = (pkt[0] << 8) | pkt[1]
            p = 2 + tl + (2 if qos else 0)
            if tl and p <= n:
                mid = (pkt[p - 2] << 8) | pkt[p - 1] if qos else 0
                inbox.put(bytes(pkt[2:2 + tl]), bytes(memoryview(pkt)[p:]), mid, qos, bool(cmd & 0x01))
                return 0  # MQTT_ERR_SUCCESS; manual ack: the PUBACK is the consumer's
        return handle_publish()  # malformed, MQTT 5 properties, QoS 2: paho's way (ends in on_message below)

    def on_message(message: Any) -> None:
        inbox.put(message._topic, message.payload, message.mid, message.qos, bool(message.retain))  # raw topic bytes

    paho._sock_recv = buffered_recv
    paho._handle_publish = fast_publish
    paho._handle_on_message = on_message
    fd = sock.fileno()
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        try:
            for _ in range(4096):
                if paho._sock is None:
                    return
                rc = read()
                if rc > 0:
                    handle(rc)
                    return
                if rc == -1 and pos >= len(buf):  # MQTT_ERR_AGAIN with nothing buffered here
                    pending = getattr(paho._sock, "pending", None)  # TLS buffers too
                    if not (pending and pending() > 0):
                        return
            loop.call_soon(on_readable)  # more buffered: continue after the consumer had a turn
        except Exception as exc:  # as aiomqtt does: a broken socket ends the session
            if not client._disconnected.done():
                client._disconnected.set_exception(exc)

    loop.remove_reader(fd)
    loop.add_reader(fd, on_readable)
    return True


def _ack(paho: Any, batch: list[tuple[str, bytes, int, int, bool]]) -> None:
    """Acknowledge a committed batch in arrival order: all its PUBACKs in one socket write."""
    if any(q == 2 for _t, _p, _m, q, _r in batch):
        for _t, _p, mid, qos, _r in batch:
            if qos:
                paho.ack(mid, qos)
        return
    mids = [0x40020000 | mid for _t, _p, mid, qos, _r in batch if qos]
    if mids:  # PUBACK = 0x40, remaining length 2, packet id (the same 4 bytes in MQTT 3.1.1 and 5)
        paho._packet_queue(_PUBACK, struct.pack(f">{len(mids)}I", *mids), 0, 0)


def subscriptions(share: str | None = None) -> list[str]:
    """The topic filters ingest subscribes to, under ``$share/<group>/`` when sharing."""
    subs = [TM_FILTER, STATUS_FILTER]
    if share:
        subs = [f"$share/{share}/{s}" for s in subs]
    return subs


class IngestWorker:
    """Subscribes to every node's tm/status topics and feeds a Pipeline, forever.

    Reconnects with back-off when the broker goes away.  ``share`` joins an MQTT 5
    shared subscription group so several workers split the load (give each a distinct
    ``client_id``).  ``known``: the (site, node) pairs to accept (the Pipeline's; others
    are quarantined).  ``stats()`` returns the pipeline's counter snapshot.
    """

    def __init__(
        self,
        archive: Archive,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "lunabase-ingest",
        share: str | None = None,
        sinks: Iterable[IngestSink] = (),
        tls: ssl.SSLContext | None = None,
        max_batch: int = 4000,
        linger_s: float = 0.0,
        batch_reader: bool = True,
        protocol: int = 4,
        session_expiry_s: int = 7 * 86400,
        pipeline: Pipeline | None = None,
        parser: Any = None,
        known: Collection[tuple[str, str]] | None = None,
    ) -> None:
        self.archive = archive
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.client_id = client_id
        self.share = share
        self.tls = tls
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.batch_reader = batch_reader
        if protocol not in (4, 5):
            raise ValueError(f"protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5), got {protocol!r}")
        self.protocol = protocol
        self.session_expiry_s = session_expiry_s
        self.pipeline = pipeline or Pipeline(archive, sinks, parser=parser, known=known)
        self.connected = asyncio.Event()
        self.connections = 0
        self.acked = 0
        self.failures = 0  # sessions ended by an error (broker or archive)
        self.last_failure: str | None = None
        self.failing_since: float | None = None  # time.time() of the first failure since the last commit
        self.backlog = 0  # messages received from the broker, not yet processed
        self.oldest_pending: float | None = None  # time.time() since which a backlog has been waiting
        self.last_batch: float | None = None  # time.time() of the last batch processed and acknowledged
        self.rlog = RateLimitedLog(log, 10.0)
        self._stop = asyncio.Event()

    def lag_s(self, now: float | None = None) -> float:
        """Seconds the oldest waiting message has waited (0 with no backlog); a bound, not exact."""
        now = time.time() if now is None else now
        return 0.0 if self.oldest_pending is None else max(0.0, now - self.oldest_pending)

    def stats(self) -> dict[str, Any]:
        snap = self.pipeline.snapshot()
        snap["worker"] = {"client_id": self.client_id, "broker": f"{self.host}:{self.port}", "share": self.share,
                          "connected": self.connected.is_set(), "connections": self.connections, "acked": self.acked,
                          "failures": self.failures, "last_failure": self.last_failure,
                          "failing_since": self.failing_since, "backlog": self.backlog, "lag_s": self.lag_s(),
                          "last_batch": self.last_batch}
        return snap

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect (unacked messages stay at the broker)."""
        self._stop.set()

    def _client(self) -> aiomqtt.Client:
        kw: dict[str, Any] = {}
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            kw.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            # MQTT 3.1.1: a persistent session is clean_session=False (mosquitto expires it
            # after persistent_client_expiration); mosquitto accepts $share/ from 3.1.1 clients
            kw.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=self.client_id,
            tls_context=self.tls,
            keepalive=30,
            **kw,
        )
        # acknowledge after commit: paho must not PUBACK on delivery (aiomqtt has no option)
        client._client.manual_ack_set(True)
        # paho formats two debug log records per message; that is ~7 % of ingest time
        client._client.disable_logger()
        return client

    async def run(self) -> None:
        """Connect, ingest, reconnect on failure, until stop()."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self._session()
                delay = 0.2
            except Exception as e:
                self.connected.clear()
                if self._stop.is_set():
                    break
                self.failures += 1
                self.last_failure = f"{type(e).__name__}: {e}"[:300]
                if self.failing_since is None:
                    self.failing_since = time.time()
                if isinstance(e, aiomqtt.MqttError):
                    self.rlog.warning("broker", "broker %s:%d: %s; reconnecting in %.1f s", self.host, self.port, e,
                                      delay)
                else:
                    # e.g. the archive failed: the batch was not acknowledged, so the broker
                    # keeps it; drop the connection and try again (a message the pipeline
                    # cannot handle never gets here: it is quarantined and acknowledged)
                    self.rlog.error("batch", "ingest batch failed (%s: %s); nothing of it was acknowledged; "
                                    "retrying in %.1f s", type(e).__name__, e, delay, exc_info=True)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
        self.connected.clear()

    async def _session(self) -> None:
        client = self._client()
        async with client:
            self.connections += 1
            inbox: _Inbox | None = _Inbox()
            if not self.batch_reader:
                inbox = None
            elif not _install_fast_path(client, inbox):  # type: ignore[arg-type]
                inbox = None
                log.warning("paho internals differ from what the ingest's fast path expects: reading through "
                            "aiomqtt, one MQTT message per event-loop turn (slower, nothing lost)")
            else:
                # what aiomqtt took before the fast path was in place (a persistent session's
                # backlog arrives right after CONNACK) comes first
                queue: asyncio.Queue[aiomqtt.Message] = client._queue
                early = []
                while not queue.empty():
                    m = queue.get_nowait()
                    early.append((m.topic.value, m.payload, m.mid, m.qos, bool(m.retain)))
                inbox.items.extendleft(reversed(early))  # type: ignore[union-attr, arg-type]
            for f in subscriptions(self.share):
                if self.protocol == 5:
                    await client.subscribe(f, options=SubscribeOptions(qos=1))
                else:
                    await client.subscribe(f, qos=1)
            log.info("ingest %s connected to %s:%d%s (MQTT %s) as %s, subscribed to %s", self.client_id, self.host,
                     self.port, " (TLS)" if self.tls else "", "5" if self.protocol == 5 else "3.1.1", self.username or "anonymous",
                     ", ".join(subscriptions(self.share)))
            self.connected.set()
            if inbox is None:
                await self._consume_aiomqtt(client)
            else:
                await self._consume(client, inbox)

    async def _consume(self, client: aiomqtt.Client, inbox: _Inbox) -> None:
        """Batches from the fast path's inbox: process (one commit), then acknowledge."""
        paho = client._client
        items = inbox.items
        disconnected: asyncio.Future[None] = client._disconnected
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                if not items:
                    inbox.wake.clear()
                    wake = asyncio.ensure_future(inbox.wake.wait())
                    done, _ = await asyncio.wait({wake, stop, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                    if stop in done:
                        return
                    if not items:
                        if disconnected.done():
                            exc = disconnected.exception()
                            raise aiomqtt.MqttError("Disconnected during message iteration") from exc
                        continue
                if self.linger_s and len(items) < self.max_batch // 4:
                    # fewer, larger commits for at most linger_s of extra latency
                    await asyncio.sleep(self.linger_s)
                batch = [items.popleft() for _ in range(min(len(items), self.max_batch))]
                received = time.time()
                if self.oldest_pending is None:
                    self.oldest_pending = received
                self.backlog = len(batch) + len(items)
                self.pipeline.process([(t, p, received, r) for t, p, _m, _q, r in batch])
                _ack(paho, batch)  # only now: the batch is committed
                self.acked += len(batch)
                self.last_batch = time.time()
                self.failing_since = None
                self.backlog = len(items)
                # what is still queued arrived while this batch was processed, at the latest now
                self.oldest_pending = self.last_batch if self.backlog else None
                if self._stop.is_set():
                    return
                await asyncio.sleep(0)  # let paho write the acks and read more
        finally:
            stop.cancel()

    async def _consume_aiomqtt(self, client: aiomqtt.Client) -> None:
        """The slow path (paho internals not as expected): aiomqtt's message iterator."""
        queue: asyncio.Queue[aiomqtt.Message] = client._queue  # batch drain
        it = client.messages.__aiter__()
        paho = client._client
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                batch = [nxt.result()]
                if self.linger_s and queue.qsize() < self.max_batch // 4:
                    # let more messages arrive (aiomqtt reads one per loop turn): fewer,
                    # larger commits for at most linger_s of extra latency
                    await asyncio.sleep(self.linger_s)
                while len(batch) < self.max_batch:
                    try:
                        batch.append(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                received = time.time()
                if self.oldest_pending is None:
                    self.oldest_pending = received
                self.backlog = len(batch) + queue.qsize()
                self.pipeline.process([(m.topic.value, m.payload, received, bool(m.retain))  # type: ignore[misc]
                                       for m in batch])
                for m in batch:
                    if m.qos:
                        paho.ack(m.mid, m.qos)
                self.acked += len(batch)
                self.last_batch = time.time()
                self.failing_since = None
                self.backlog = queue.qsize()
                # what is still queued arrived while this batch was processed, at the latest now
                self.oldest_pending = self.last_batch if self.backlog else None
                if self._stop.is_set():
                    return
                await asyncio.sleep(0)  # let paho write the acks and read more
        finally:
            stop.cancel()

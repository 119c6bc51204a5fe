"""Full-rate live telemetry for the web console: WebSocket ``/api/web/live``.

The hub's ``/api/ws`` carries the base's *state* (nodes, alarms, events, commands and the
latest value of each packet, decimated to ``param_hz``).  Plots and the seismic view need
every sample, so the console opens this second stream and says what it shows::

    -> {"subscribe": ["n01.HK.cpu_temp", ...], "seismic": ["n01"]}   (and "unsubscribe")
    <- {"type": "batch", "seq": 7, "params": {"n01.HK.cpu_temp": {"t": [ms...], "v": [...], "r": [[n, ms]...]}},
        "seismic": {"n01": [{"t": ms, "rate": 100, "x": [...], "y": [...], "z": [...]}]},
        "dropped": 0, "resyncs": 0}
    -> {"ack": 7}

Every ``flush_s`` the ground sends what arrived since (one message per client, not one per
sample: Open MCT's ``supportsBatching``).  Flow control: at most ``window`` batches may be
unacknowledged; while the client does not acknowledge (a busy or slow browser), samples
wait in its queue, which is bounded (``max_pending`` samples).  A queue over its bound is
**dropped and resynced**: emptied, counted, and the client told
``{"type": "resync", "dropped": <samples dropped so far>, "resyncs": n}`` so it shows it and
reloads the gap from the archive.  Ingest never waits for a console.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from wire.timetag import ticks_to_unix

if TYPE_CHECKING:
    from ground.parse import Table

log = logging.getLogger("ground.web")

MAX_SUBS = 2000  # parameters one console may follow (a wall of plots is a few hundred)
MAX_MESSAGE = 64 * 1024  # a subscribe message naming hundreds of parameters fits
ID_MAX = 200


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


class LiveClient:
    """One console's subscriptions and its bounded queue of samples not yet sent."""

    def __init__(self, feed: LiveFeed) -> None:
        self.feed = feed
        self.params: dict[tuple[str, str], dict[str, str]] = {}  # (node, packet) -> field -> id
        self.nsubs = 0
        self.seismic: set[str] = set()
        self.pending: dict[str, list[tuple[np.ndarray, np.ndarray, float]]] = {}
        self.pending_seismic: dict[str, list[dict[str, Any]]] = {}
        self.npending = 0  # samples queued (a seismic sample counts once per axis)
        self.dropped = 0
        self.resyncs = 0
        self.resync_due = False
        self.seq = 0
        self.acked = 0
        self.sent_samples = 0
        self.wake = asyncio.Event()

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, ids: list[Any], seismic: list[Any]) -> None:
        """Follow parameters ('node.PACKET.field') and nodes' seismic streams; all or none."""
        for pid in ids:
            if not isinstance(pid, str) or len(pid) > ID_MAX or pid.count(".") < 2:
                raise ValueError(f"a parameter id is 'node.PACKET.field', not {str(pid)[:80]!r}")
        for node in seismic:
            if not isinstance(node, str) or len(node) > ID_MAX:
                raise ValueError("seismic names nodes")
        for pid in ids:
            node, packet, field = pid.split(".", 2)
            fields = self.params.setdefault((node, packet), {})
            if field not in fields:
                if self.nsubs >= MAX_SUBS:
                    raise ValueError(f"at most {MAX_SUBS} live parameters per console")
                fields[field] = pid
                self.nsubs += 1
        self.seismic.update(seismic)

    def unsubscribe(self, ids: list[Any], seismic: list[Any]) -> None:
        for pid in ids:
            if isinstance(pid, str) and pid.count(".") >= 2:
                node, packet, field = pid.split(".", 2)
                fields = self.params.get((node, packet))
                if fields and fields.pop(field, None) is not None:
                    self.nsubs -= 1
                    if not fields:
                        del self.params[(node, packet)]
                self.pending.pop(pid, None)
        for node in seismic:
            self.seismic.discard(node)
            self.pending_seismic.pop(node, None)

    # -- samples (from Operations, after the archive commit) -------------------------------

    def add(self, node: str, packet: str, table: Table, t_ms: np.ndarray, received: float) -> None:
        fields = self.params.get((node, packet))
        n = len(t_ms)
        if fields:
            cols = table.columns
            for field, pid in fields.items():
                if field in cols:
                    self.pending.setdefault(pid, []).append((t_ms, table.values[:, cols.index(field)], received))
                    self.npending += n
        if node in self.seismic and table.raw_samples is not None:
            rate_col = table.columns.index("rate") if "rate" in table.columns else None
            out = self.pending_seismic.setdefault(node, [])
            for k in range(n):
                rate = float(table.values[k, rate_col]) if rate_col is not None else 0.0
                s = np.asarray(table.raw_samples[k], dtype=np.float64) * table.sample_scale  # (count, axes)
                out.append({"t": float(t_ms[k]), "rate": rate if rate > 0 else 100.0, "s": s})
                self.npending += s.size
        if self.npending > self.feed.max_pending:
            self._drop()
        self.wake.set()

    def _drop(self) -> None:
        self.dropped += self.npending
        self.resyncs += 1
        self.pending.clear()
        self.pending_seismic.clear()
        self.npending = 0
        self.resync_due = True
        self.feed.dropped += 1

    def batch(self, axes: tuple[str, ...]) -> dict[str, Any] | None:
        """The next message with everything queued (and empties the queue), or None."""
        if not self.npending:
            return None
        params: dict[str, Any] = {}
        for pid, parts in self.pending.items():
            t = np.concatenate([p[0] for p in parts])
            v = np.concatenate([p[1] for p in parts])
            # the ground's receipt time as runs [count, ms]: one per MQTT message, not per sample
            params[pid] = {"t": t.tolist(), "v": [_num(x) for x in v.tolist()],
                           "r": [[len(p[0]), round(p[2] * 1000.0, 1)] for p in parts]}
        seismic: dict[str, Any] = {}
        for node, pkts in self.pending_seismic.items():
            seismic[node] = [{"t": p["t"], "rate": p["rate"],
                              **{a: np.round(p["s"][:, i], 4).tolist() for i, a in enumerate(axes) if i < p["s"].shape[1]}}
                             for p in pkts]
        self.sent_samples += self.npending
        self.pending, self.pending_seismic, self.npending = {}, {}, 0
        self.seq += 1
        return {"type": "batch", "seq": self.seq, "params": params, "seismic": seismic,
                "dropped": self.dropped, "resyncs": self.resyncs, "time": time.time()}


class LiveFeed:
    """Every console's live stream; ``on_table`` is an ``Operations.table_listeners`` hook."""

    def __init__(self, server: Any, *, max_pending: int = 200_000, window: int = 4, flush_s: float = 0.1) -> None:
        self.server = server
        self.ops = server.ops
        self.max_pending = max_pending  # samples queued per console before it is dropped and resynced
        self.window = window  # unacknowledged batches in flight per console
        self.flush_s = flush_s
        self.clients: set[LiveClient] = set()
        self.dropped = 0  # resyncs of all consoles (health / tests)
        sp = self.ops.dictionary.packet("SEISMIC").samples if self._has("SEISMIC") else None
        self.axes: tuple[str, ...] = tuple(sp.axes) if sp is not None else ()
        self.ops.table_listeners.append(self.on_table)

    def _has(self, name: str) -> bool:
        try:
            self.ops.dictionary.packet(name)
        except KeyError:
            return False
        return True

    def on_table(self, node: str, packet: str, table: Table, ticks: np.ndarray, received: float) -> None:
        if not self.clients:
            return
        t_ms = ticks_to_unix(np.asarray(ticks, dtype=np.int64)) * 1000.0
        for c in list(self.clients):
            if (node, packet) in c.params or (node in c.seismic and table.raw_samples is not None):
                c.add(node, packet, table, t_ms, received)

    async def handle(self, req: web.Request, ident: Any) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE)
        await ws.prepare(req)
        c = LiveClient(self)
        self.clients.add(c)
        log.info("live telemetry stream to %s (%s) opened (%d now)", req.remote, ident.describe(), len(self.clients))

        async def sender() -> None:
            while True:
                await asyncio.sleep(self.flush_s)
                if c.resync_due:
                    c.resync_due = False
                    c.acked = c.seq  # a fresh start: what was in flight no longer counts
                    await ws.send_str(json.dumps({"type": "resync", "dropped": c.dropped, "resyncs": c.resyncs,
                                                  "time": time.time()}))
                if c.seq - c.acked >= self.window:
                    continue  # the client is behind: its samples wait in the (bounded) queue
                msg = c.batch(self.axes)
                if msg is not None:
                    await ws.send_str(json.dumps(msg))

        async def watch() -> None:  # logout, account removal, key revocation end the stream
            auth = self.server.auth
            while True:
                await asyncio.sleep(5.0)
                if not auth.still_valid(ident):
                    await ws.close(code=4401, message=b"credential revoked")
                    return

        task = asyncio.create_task(sender())
        watcher = asyncio.create_task(watch())
        try:
            async for m in ws:
                if m.type != WSMsgType.TEXT:
                    if m.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                        break
                    continue
                try:
                    d = json.loads(m.data)
                    if not isinstance(d, dict):
                        raise ValueError("a JSON object is expected")
                    if "ack" in d:
                        ack = int(d["ack"])
                        if c.acked < ack <= c.seq:
                            c.acked = ack
                    for key, fn in (("subscribe", c.subscribe), ("unsubscribe", c.unsubscribe)):
                        ids = d.get(key) or []
                        seis = d.get("seismic" if key == "subscribe" else "unsubscribe_seismic") or []
                        if not isinstance(ids, list) or not isinstance(seis, list):
                            raise ValueError(f"{key} takes a list of parameter ids")
                        if ids or seis:
                            fn(ids, seis)
                except (ValueError, TypeError) as e:
                    await ws.send_str(json.dumps({"type": "error", "error": str(e)[:300]}))
        finally:
            self.clients.discard(c)
            for t in (task, watcher):
                t.cancel()
            for t in (task, watcher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            log.info("live telemetry stream to %s closed (%d samples sent, %d dropped in %d resyncs)",
                     req.remote, c.sent_samples, c.dropped, c.resyncs)
        return ws

"""HTTP JSON + WebSocket server of the ground's client interface (docs/ground-api.md).

Binds 127.0.0.1 by default; ``port=0`` picks a free port (read ``server.port`` after
``start()``).  Any number of clients; a slow WebSocket client is resynced, never waited on.
Every route declares its privilege (``@requires``); ``ground.auth.Auth`` checks Host,
Origin, content type and the caller's credential before any handler runs, and actions
are recorded under the authenticated account, never a name from the request body.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from typing import Any

from aiohttp import WSMsgType, web

from ground.api import schemas
from ground.api.limits import ConnectionLimiter, LimitedSite
from ground.archive._gaps import GAP_STATES
from ground.auth import IDENTITY, Auth, Identity, identity, requires
from ground.auth import roles as R
from ground.ops import FINAL, AlarmError, CommandError, Operations, SelfApproval
from ground.ops.leader import NotLeader

log = logging.getLogger("ground.api")


def _clean(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def dumps(o: Any) -> str:
    """Strict JSON (NaN/inf become null)."""
    try:
        return json.dumps(o, allow_nan=False)
    except ValueError:
        return json.dumps(_clean(o))


def _json(o: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(o), status=status, content_type="application/json")


def _err(status: int, msg: str) -> web.Response:
    return _json({"error": msg}, status)


def _float(q: Any, name: str) -> float | None:
    v = q.get(name)
    return None if v in (None, "") else float(v)


class Forbidden(Exception):
    """The caller is authenticated but may not do this (403 with the reason)."""


def _handler(fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapped(self: ApiServer, req: web.Request) -> web.StreamResponse:
        try:
            return await fn(self, req)
        except (Forbidden, SelfApproval) as e:
            return _err(403, str(e))
        except NotLeader as e:  # a follower ground: the client is told where the leader is
            return _json({"error": str(e), "leader": e.leader}, 409)
        except (CommandError, ValueError, json.JSONDecodeError) as e:
            return _err(400, str(e))
        except (AlarmError, KeyError) as e:
            return _err(404, str(e.args[0]) if e.args else "not found")

    return wrapped


_identity = identity


def _actor(req: web.Request, body: dict[str, Any]) -> str:
    """The authenticated account; a ``user`` in the body must name the same account."""
    name = _identity(req).name
    claimed = body.get("user")
    if claimed is not None and claimed != name:
        raise Forbidden(f"'user' in the request ({str(claimed)[:64]!r}) is not the authenticated account "
                        f"({name!r}); actions are recorded under the account that logs in")
    return name


class ApiServer:
    """Serves one ``Operations`` object over HTTP and WebSocket, behind ``auth``."""

    def __init__(self, ops: Operations, host: str = "127.0.0.1", port: int = 0, *, auth: Auth,
                 limiter: ConnectionLimiter | None = None, max_ws: int = 256, archive: Any = None,
                 web_console: bool = True, ssl_context: Any = None) -> None:
        """``ssl_context``: an ssl.SSLContext with the server certificate: HTTPS and WSS."""
        self.ops = ops
        self.ssl_context = ssl_context
        self.host, self.port = host, port
        self.auth = auth
        auth.event = lambda kind, msg, severity="INFO", data=None: ops.store.event(
            kind, msg, site=ops.site, severity=severity, data=data)
        ops.commander.two_person = auth.policy.applies
        ops.commander.approval_timeout = auth.policy.timeout
        # the guard first (Host, Origin, content type, credential, privilege: ground/auth), then every
        # route's request checked against ground/api/schemas.py; bodies capped
        self.app = web.Application(middlewares=[auth.middleware, schemas.middleware],
                                   client_max_size=schemas.MAX_BODY)
        self.runner: web.AppRunner | None = None
        self.clients = 0
        self.limiter = limiter or ConnectionLimiter()
        self.max_ws = max_ws
        r = self.app.router
        auth.add_routes(r)
        r.add_get("/api/nodes", self.nodes)
        r.add_get("/api/latest", self.latest)
        r.add_get("/api/params", self.params)
        r.add_get("/api/alarms", self.alarms)
        r.add_post("/api/alarms/{id}/ack", self.ack)
        r.add_post("/api/alarms/{id}/shelve", self.shelve)
        r.add_post("/api/alarms/{id}/unshelve", self.unshelve)
        r.add_get("/api/events", self.events)
        r.add_get("/api/dictionary", self.dictionary)
        r.add_post("/api/commands", self.post_command)
        r.add_get("/api/commands", self.commands)
        r.add_get("/api/commands/{id}", self.command)
        r.add_post("/api/commands/{id}/cancel", self.cancel_command)
        r.add_post("/api/commands/{id}/approve", self.approve_command)
        r.add_post("/api/commands/{id}/deny", self.deny_command)
        r.add_get("/api/packets", self.packets)
        r.add_get("/api/links", self.links)
        r.add_get("/api/gaps", self.gaps)
        r.add_get("/api/seismic", self.seismic)
        r.add_get("/api/health", self.health)
        r.add_get("/api/ws", self.ws)
        if web_console:  # the browser console (ground/web): pages, Open MCT, history, saved displays
            from ground.web import WebConsole

            self.web = WebConsole(self, archive)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://{self.host}:{self.port}"

    async def start(self) -> ApiServer:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0, **schemas.HANDLER_ARGS)
        await self.runner.setup()
        site = LimitedSite(self.runner, self.host, self.port, self.limiter, reuse_address=True,
                           ssl_context=self.ssl_context)
        await site.start()
        self.port = site.bound_port
        self.auth.bind(self.host, self.port)
        log.info("client interface on %s (HTTP /api/..., WebSocket /api/ws)", self.url)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- HTTP ---------------------------------------------------------------------------

    @requires(R.READ)
    @_handler
    async def health(self, req: web.Request) -> web.Response:
        # the truth about every part (ground/health.py); 200 either way, ``ok`` says it
        h = self.ops.health()
        h["clients"] = self.clients
        return _json(h)

    @requires(R.READ)
    @_handler
    async def nodes(self, req: web.Request) -> web.Response:
        return _json(self.ops.nodes_view())

    @requires(R.READ)
    @_handler
    async def latest(self, req: web.Request) -> web.Response:
        node = req.query.get("node")
        if not node:
            return _err(400, "node= is required")
        return _json({"node": node, "packets": self.ops.latest_view(node)})

    @requires(R.READ)
    @_handler
    async def params(self, req: web.Request) -> web.Response:
        q = req.query
        node, packet, field = q.get("node"), q.get("packet"), q.get("field")
        if q.get("param") and "." in q["param"]:
            packet, field = q["param"].split(".", 1)
        if not (node and packet and field):
            return _err(400, "node=, packet= and field= (or param=PACKET.field) are required")
        limit = int(q.get("limit", 1000))
        res = await asyncio.get_running_loop().run_in_executor(
            None, self.ops.params_view, node, packet, field, _float(q, "since"), _float(q, "until"), limit)
        return _json(res)

    @requires(R.READ)
    @_handler
    async def alarms(self, req: web.Request) -> web.Response:
        q = req.query
        if q.get("all") in ("1", "true"):
            return _json(self.ops.store.alarms(open_only=False, limit=int(q.get("limit", 500))))
        return _json(self.ops.alarms.active(include_shelved=q.get("shelved", "1") in ("1", "true")))

    async def _body(self, req: web.Request) -> dict[str, Any]:
        if not req.body_exists:  # (the schema middleware already read it: aiohttp keeps the bytes)
            return {}
        b = await req.json()
        if not isinstance(b, dict):
            raise ValueError("the request body must be a JSON object")
        return b

    @requires(R.ALARMS)
    @_handler
    async def ack(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        return _json(self.ops.alarms.acknowledge(int(req.match_info["id"]), _actor(req, b)))

    @requires(R.ALARMS)
    @_handler
    async def shelve(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        minutes = float(b.get("minutes", 60))
        if not math.isfinite(minutes) or not 0 < minutes <= 7 * 24 * 60:
            raise ValueError("minutes must be > 0 and at most a week")
        return _json(self.ops.alarms.shelve(int(req.match_info["id"]), minutes, _actor(req, b)))

    @requires(R.ALARMS)
    @_handler
    async def unshelve(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        return _json(self.ops.alarms.unshelve(int(req.match_info["id"]), _actor(req, b)))

    @requires(R.READ)
    @_handler
    async def events(self, req: web.Request) -> web.Response:
        q = req.query
        after = q.get("after_id")
        return _json(self.ops.store.events(since=_float(q, "since"), limit=int(q.get("limit", 200)),
                                           node=q.get("node"), kind=q.get("kind"),
                                           after_id=int(after) if after else None))

    @requires(R.READ)
    @_handler
    async def dictionary(self, req: web.Request) -> web.Response:
        return _json(self.ops.dictionary_view())

    @requires(R.COMMAND)
    @_handler
    async def post_command(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        if "node" not in b or "command" not in b:
            return _err(400, "node and command are required")
        user = _actor(req, b)
        confirm = b.get("confirm", False)
        if not isinstance(confirm, bool):
            return _err(400, "confirm must be true or false (JSON boolean)")
        args = b.get("args") or {}
        if not isinstance(args, dict):
            return _err(400, "args must be a JSON object")
        try:
            cd = self.ops.dictionary.command(str(b["command"]))
        except KeyError as e:
            raise CommandError(str(e.args[0])) from None
        ident = _identity(req)
        if not R.may_send(ident.roles, cd.name, cd.hazardous):
            need = "commander" if cd.hazardous else "operator"
            raise Forbidden(f"{ident.name} (roles {', '.join(ident.roles)}) may not send "
                            f"{'hazardous ' if cd.hazardous else ''}command {cd.name} (role {need} may)")
        row = await self.ops.commander.submit(
            b["node"], cd.name, args, user=user, confirm=confirm,
            not_before=b.get("not_before"), not_after=b.get("not_after"))
        return _json(row, 201)

    @requires(R.READ)
    @_handler
    async def commands(self, req: web.Request) -> web.Response:
        return _json(self.ops.commander.list(int(req.query.get("limit", 200))))

    @requires(R.READ)
    @_handler
    async def command(self, req: web.Request) -> web.Response:
        cid = int(req.match_info["id"])
        row = self.ops.commander.get(cid)
        if row is None:
            return _err(404, f"no command {cid}")
        wait = _float(req.query, "wait")
        if wait and row["stage"] not in FINAL:
            try:
                row = await self.ops.commander.wait(cid, min(wait, 300.0))
            except TimeoutError:
                row = self.ops.commander.get(cid)
        return _json(row)

    @requires(R.COMMAND)
    @_handler
    async def cancel_command(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        user = _actor(req, b)
        cid = int(req.match_info["id"])
        row = self.ops.commander.get(cid)
        if row is None:
            return _err(404, f"no command {cid}")
        if row["user"] != user and not _identity(req).has(R.COMMAND_CANCEL_ANY):
            raise Forbidden(f"command {cid} was sent by {row['user']}; cancelling another account's command "
                            f"needs {R.COMMAND_CANCEL_ANY!r} (role commander)")
        return _json(self.ops.commander.cancel(cid, user))

    def _may_approve(self, req: web.Request, cid: int) -> str:
        ident = _identity(req)
        row = self.ops.commander.get(cid)
        if row is None:
            raise KeyError(f"no command {cid}")
        if not R.may_approve(ident.roles, row["command"], bool(row["hazardous"])):
            raise Forbidden(f"{ident.name} (roles {', '.join(ident.roles)}) may not approve or deny "
                            f"{row['command']} (needs {R.COMMAND_APPROVE!r} and the right to send it: commander)")
        return ident.name

    @requires(R.COMMAND_APPROVE)
    @_handler
    async def approve_command(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        user = _actor(req, b)
        cid = int(req.match_info["id"])
        self._may_approve(req, cid)
        return _json(await self.ops.commander.approve(cid, user))

    @requires(R.COMMAND_APPROVE)
    @_handler
    async def deny_command(self, req: web.Request) -> web.Response:
        b = await self._body(req)
        user = _actor(req, b)
        cid = int(req.match_info["id"])
        self._may_approve(req, cid)
        reason = b.get("reason", "")
        return _json(self.ops.commander.deny(cid, user, str(reason)))

    @requires(R.READ)
    @_handler
    async def packets(self, req: web.Request) -> web.Response:
        node = req.query.get("node")
        if not node:
            return _err(400, "node= is required")
        return _json(await asyncio.get_running_loop().run_in_executor(  # archive read: off the event loop
            None, self.ops.packets_view, node, int(req.query.get("limit", 20))))

    @requires(R.READ)
    @_handler
    async def links(self, req: web.Request) -> web.Response:
        return _json(self.ops.links())

    @requires(R.READ)
    @_handler
    async def gaps(self, req: web.Request) -> web.Response:
        q = req.query
        state = q.get("state")
        if state is not None and state not in GAP_STATES:
            return _err(400, f"state must be one of {', '.join(GAP_STATES)}")
        return _json(await asyncio.get_running_loop().run_in_executor(  # archive read: off the event loop
            None, self.ops.gaps_view, q.get("node"), state, int(q.get("limit", 200))))

    @requires(R.READ)
    @_handler
    async def seismic(self, req: web.Request) -> web.Response:
        node = req.query.get("node")
        if not node:
            return _err(400, "node= is required")
        return _json(self.ops.seismic_view(node, float(req.query.get("seconds", 60)),
                                           int(req.query.get("max_points", 2000))))

    # -- WebSocket ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"type": "snapshot", "site": self.ops.site, "time": time.time(), "nodes": self.ops.nodes_view(),
                "alarms": self.ops.alarms.active(include_shelved=True), "links": self.ops.links()}

    async def _ws_first_auth(self, ws: web.WebSocketResponse) -> Identity | None:
        """The first message must be ``{"auth": TOKEN}`` within 10 s; None (connection closed) if not."""
        why = "the first message must be {\"auth\": TOKEN}"
        try:
            m = await ws.receive(timeout=10.0)
        except TimeoutError:
            m, why = None, "no credential within 10 s"
        ident = None
        if m is not None and m.type == WSMsgType.TEXT and len(m.data) <= 4096:
            try:
                d = json.loads(m.data)
            except ValueError:
                d = None
            if isinstance(d, dict) and isinstance(d.get("auth"), str):
                ident, why = self.auth.identify(d["auth"])
                if ident is not None and not ident.has(R.READ):
                    ident, why = None, f"{ident.name} lacks privilege {R.READ!r}"
        if ident is None:
            try:
                await ws.send_str(dumps({"type": "error", "status": 401, "error": why}))
                await ws.close(code=4401, message=b"unauthorized")
            except ConnectionError:  # the client left first
                pass
        return ident

    @requires(R.READ, ws=True)
    async def ws(self, req: web.Request) -> web.StreamResponse:
        if self.clients >= self.max_ws:
            return _err(503, f"too many live clients ({self.max_ws})")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=schemas.MAX_WS_MESSAGE)
        await ws.prepare(req)
        ident = req.get(IDENTITY)
        if ident is None:
            ident = await self._ws_first_auth(ws)
            if ident is None:
                return ws
            await ws.send_str(dumps({"type": "auth", "user": {"name": ident.name, "roles": ident.roles}}))
        sub = self.ops.hub.subscribe()
        self.clients += 1
        log.info("WebSocket client %s (%s) connected (%d now)", req.remote, ident.describe(), self.clients)

        async def sender() -> None:
            await ws.send_str(dumps(self.snapshot()))
            while True:
                msg = await sub.get()
                if msg.get("type") == "resync":
                    await ws.send_str(dumps(msg))
                    msg = self.snapshot()
                await ws.send_str(dumps(msg))

        async def watch() -> None:  # logout, account removal, key revocation end the stream
            while True:
                await asyncio.sleep(5.0)
                if not self.auth.still_valid(ident):
                    await ws.send_str(dumps({"type": "error", "status": 401, "error": "credential revoked"}))
                    await ws.close(code=4401, message=b"credential revoked")
                    return

        task = asyncio.create_task(sender())
        watcher = asyncio.create_task(watch())
        try:
            async for m in ws:
                if m.type == WSMsgType.TEXT and m.data == "ping":
                    await ws.send_str(dumps({"type": "pong", "time": time.time()}))
                elif m.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            watcher.cancel()
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # client went away
                pass
            self.ops.hub.unsubscribe(sub)
            self.clients -= 1
        return ws

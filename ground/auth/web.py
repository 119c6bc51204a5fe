"""The ground's HTTP guard: Host/Origin/content-type checks, credentials, privileges, /api/auth/*.

    auth = Auth(AccountStore.open("lunabase-users.json"))
    app = web.Application(middlewares=[auth.middleware])
    auth.add_routes(app.router)

    @requires(READ)                      # every handler declares the privilege it needs
    async def nodes(self, req): ...      # req["identity"] is the caller (an ``Identity``)

Order of checks on every request (docs/ground-api.md, "Access"):

1. ``Host`` must name this ground (DNS rebinding): 127.0.0.1, localhost, ::1, the bind
   host and ``allowed_hosts``; else 403.
2. A state-changing request (not GET/HEAD) must be ``Content-Type: application/json``
   (415; a bodyless PUT/DELETE, which needs a CORS preflight anyway, may omit it) and, if it carries ``Origin``, an allow-listed one (403); so must a WebSocket
   upgrade.  A request the browser marks ``Sec-Fetch-Site: cross-site`` is refused too.
   Nothing answers a CORS preflight, so no other origin's script can send JSON here.
3. The credential: ``Authorization: Bearer`` (access token or API key), else the
   ``lb_session`` cookie (HttpOnly, SameSite=Strict; a cookie-authenticated state change
   must also carry an allow-listed ``Origin``).  None or a bad one: 401.  The WebSocket
   may instead authenticate by its first message ``{"auth": TOKEN}``.
4. The route's declared privilege against the account's *current* roles: 403 naming the
   missing privilege.  A route without a declaration is refused (fails closed).

Secrets are never logged: log lines and events carry account names, key ids and client
addresses only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from aiohttp import web

from ground.auth import roles as R
from ground.auth.accounts import KEY_PREFIX, AccountError, AccountStore, AuthError
from ground.auth.sessions import LoginLimiter, Session, Sessions, Tokens

log = logging.getLogger("ground.auth")

COOKIE = "lb_session"
SAFE_METHODS = ("GET", "HEAD")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_LOGIN_BODY = 4096
EventFn = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Awaitable[web.StreamResponse]])


def requires(privilege: str, *, ws: bool = False) -> Callable[[F], F]:
    """Declare the privilege a route handler needs (``ws``: may authenticate in-band)."""
    def deco(fn: F) -> F:
        setattr(fn, "__lb_privilege__", privilege)  # noqa: B010 - an attribute the guard reads
        setattr(fn, "__lb_ws__", ws)  # noqa: B010
        return fn
    return deco


@dataclass
class Identity:
    """Who is calling: the account name, its current roles and how it proved it."""

    name: str
    roles: list[str]
    via: str                       # "password" (access token), "cookie", "key"
    session: Session | None = None
    key_id: str | None = None

    @property
    def privileges(self) -> frozenset[str]:
        return R.privileges(self.roles)

    def has(self, privilege: str) -> bool:
        return privilege in self.privileges

    def describe(self) -> str:
        return f"{self.name} ({'API key ' + self.key_id if self.key_id else self.via})"


IDENTITY = cast("web.RequestKey[Identity | None]", web.RequestKey("identity", Identity))


def identity(req: web.Request) -> Identity:
    """The authenticated caller of a route that declared a privilege (set by the middleware)."""
    ident = req.get(IDENTITY)
    assert isinstance(ident, Identity), "the auth middleware sets the identity before any handler"
    return ident


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(text=json.dumps({"error": message}), status=status, content_type="application/json",
                        headers=headers)


def host_name(host: str) -> str:
    """The host part of a Host header or URL authority, lower-case, no port or brackets."""
    h = host.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _clip(s: Any, n: int = 64) -> str:
    """A caller-supplied string made safe for a log line."""
    return repr(str(s)[:n])


class Auth:
    """Accounts + sessions + the request guard of one ground's client interface."""

    def __init__(self, accounts: AccountStore, *, allowed_hosts: list[str] | tuple[str, ...] = (),
                 allowed_origins: list[str] | tuple[str, ...] = (), policy: R.TwoPersonPolicy | None = None,
                 sessions: Sessions | None = None, limiter: LoginLimiter | None = None) -> None:
        self.accounts = accounts
        if sessions is None and accounts.path is not None:  # kept beside the accounts file, 0600
            sessions = Sessions(path=accounts.path.with_name(accounts.path.stem + "-sessions.json"))
        self.sessions = sessions or Sessions()
        self.limiter = limiter or LoginLimiter()
        self.policy = policy or R.TwoPersonPolicy()
        self.extra_hosts = [host_name(h) for h in allowed_hosts]
        self.extra_origins = [o.rstrip("/").lower() for o in allowed_origins]
        self.hosts: set[str] = set(LOCAL_HOSTS) | set(self.extra_hosts)
        self.port: int | None = None
        self.event: EventFn | None = None   # ops event log: event(kind, message, severity=, data=)
        self._audit_seen = len(accounts.audit)
        self.refused: dict[str, int] = {}  # reason -> count (shown in /api/health for admins)

    def bind(self, host: str, port: int) -> None:
        """Tell the guard where the server listens (the bind host is an allowed Host)."""
        h = host_name(host)
        if h not in ("0.0.0.0", "::", ""):
            self.hosts.add(h)
        self.port = port

    # -- events ------------------------------------------------------------------------

    def _event(self, message: str, severity: str = "INFO", **data: Any) -> None:
        log.log(logging.WARNING if severity != "INFO" else logging.INFO, "%s", message)
        if self.event is not None:
            try:
                self.event("auth", message, severity=severity, data=data)
            except Exception:  # the event log must never break a request
                log.exception("auth event")

    def _reload(self) -> None:
        try:
            changed = self.accounts.reload_if_changed()
        except AuthError as e:
            if self.refused.get("accounts_file", 0) == 0:
                self._event(f"accounts file not reloaded: {e}", "ERROR")
            self.refused["accounts_file"] = self.refused.get("accounts_file", 0) + 1
            return
        if changed:
            new = self.accounts.audit[self._audit_seen:] if len(self.accounts.audit) >= self._audit_seen else \
                self.accounts.audit[-10:]
            for a in new:
                self._event(f"account {a.get('target')}: {a.get('action')} by {a.get('by')}", "INFO",
                            account=a.get("target"), action=a.get("action"), by=a.get("by"))
                if a.get("action") in ("remove", "passwd"):
                    self.sessions.end_user(str(a.get("target")))
            self._audit_seen = len(self.accounts.audit)

    def _refuse(self, status: int, reason: str, key: str, **headers: str) -> web.Response:
        self.refused[key] = self.refused.get(key, 0) + 1
        return json_error(status, reason, **headers)

    # -- request checks ----------------------------------------------------------------

    def origin_allowed(self, origin: str, secure: bool) -> bool:
        o = origin.strip().rstrip("/").lower()
        if o in self.extra_origins:
            return True
        scheme, sep, rest = o.partition("://")
        if not sep or scheme != ("https" if secure else "http"):
            return False
        port = None
        if rest.startswith("["):
            h, _, p = rest[1:].partition("]")
            port = p[1:] if p.startswith(":") else None
        else:
            h, _, p = rest.partition(":")
            port = p or None
        want = self.port
        got = int(port) if port and port.isdigit() else (443 if secure else 80) if port is None else -1
        return h in self.hosts and (want is None or got == want)

    def identify(self, token: str) -> tuple[Identity | None, str]:
        """(Identity, "") for an access token or API key, else (None, reason)."""
        if token.startswith(KEY_PREFIX):
            hit = self.accounts.authenticate_key(token)
            if hit is None:
                return None, "unknown or revoked API key"
            a, kid = hit
            return Identity(a.name, list(a.roles), "key", key_id=kid), ""
        s, why = self.sessions.by_access(token)
        if s is None:
            return None, why
        a = self.accounts.users.get(s.user)
        if a is None:
            self.sessions.end(s)
            return None, "the account no longer exists"
        return Identity(a.name, list(a.roles), "password", session=s), ""

    def still_valid(self, ident: Identity) -> bool:
        """Whether a long-lived connection's identity still holds (logout, removal, revocation)."""
        self._reload()
        a = self.accounts.users.get(ident.name)
        if a is None:
            return False
        if ident.key_id is not None:
            return any(k["id"] == ident.key_id for k in a.keys)
        if ident.session is not None:
            return ident.session.id in self.sessions.sessions
        return True

    def _credential(self, req: web.Request) -> tuple[Identity | None, str]:
        h = req.headers.get("Authorization", "")
        if h:
            scheme, _, token = h.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "Authorization must be 'Bearer <token>'"
            return self.identify(token.strip())
        ck = req.cookies.get(COOKIE)
        if ck:
            s = self.sessions.by_cookie(ck)
            if s is None:
                return None, "session expired: log in again"
            a = self.accounts.users.get(s.user)
            if a is None:
                self.sessions.end(s)
                return None, "the account no longer exists"
            return Identity(a.name, list(a.roles), "cookie", session=s), ""
        return None, ""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        req = request
        host = host_name(req.headers.get("Host", ""))
        if host not in self.hosts:
            return self._refuse(403, f"Host {_clip(host)} is not a name of this ground (allowed: "
                                f"{', '.join(sorted(self.hosts))}; add one with --allowed-host)", "host")
        origin = req.headers.get("Origin")
        upgrade = req.headers.get("Upgrade", "").lower() == "websocket"
        changing = req.method not in SAFE_METHODS
        if changing or upgrade:
            if req.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                return self._refuse(403, "cross-site request refused", "cross_site")
            if origin is not None and not self.origin_allowed(origin, req.secure):
                return self._refuse(403, f"Origin {_clip(origin)} is not allowed (add it with --allowed-origin)",
                                    "origin")
        # POST must be JSON even when empty (a bodyless POST is a CORS "simple request"); PUT/DELETE
        # already need a preflight, so they only need JSON when they carry a body
        if changing and (req.method == "POST" or req.body_exists) and req.content_type != "application/json":
            return self._refuse(415, "state-changing requests must be Content-Type: application/json",
                                "content_type")
        self._reload()
        fn = req.match_info.handler  # the route's own handler, whatever middlewares follow
        priv = getattr(fn, "__lb_privilege__", None)
        if priv == R.PUBLIC:
            return await handler(req)
        ident, why = self._credential(req)
        if ident is not None and ident.via == "cookie" and (changing or upgrade) and origin is None:
            return self._refuse(403, "a cookie-authenticated request must carry an Origin header", "origin")
        if ident is None:
            if getattr(fn, "__lb_ws__", False) and upgrade and not why:
                req[IDENTITY] = None  # the WebSocket authenticates by its first message
                return await handler(req)
            return self._refuse(401, why or "authentication required: log in (POST /api/auth/login) and send "
                                "'Authorization: Bearer <token>'", "unauthenticated",
                                **{"WWW-Authenticate": 'Bearer realm="lunabase"'})
        req[IDENTITY] = ident
        if req.match_info.http_exception is not None:  # unknown path/method, now for a known caller
            return await handler(req)
        if priv is None:
            return self._refuse(403, f"{req.method} {req.path} declares no privilege; refused", "undeclared")
        if not ident.has(priv):
            return self._refuse(403, f"{ident.name} (roles {', '.join(ident.roles)}) lacks privilege {priv!r} "
                                f"(role {R.needed_role(priv)} has it)", "privilege")
        return await handler(req)

    # -- /api/auth/* -------------------------------------------------------------------

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/api/auth/login", self.login)
        r.add_post("/api/auth/refresh", self.refresh)
        r.add_post("/api/auth/logout", self.logout)
        r.add_get("/api/auth/me", self.me)
        r.add_get("/api/auth/keys", self.list_keys)
        r.add_post("/api/auth/keys", self.create_key)
        r.add_post("/api/auth/keys/{id}/revoke", self.revoke_key)
        r.add_get("/api/auth/users", self.users)

    async def _body(self, req: web.Request) -> dict[str, Any]:
        if req.content_length is not None and req.content_length > MAX_LOGIN_BODY:
            raise ValueError("request body too large")
        raw = await req.read()  # cached: a schema check may have read it already
        if len(raw) > MAX_LOGIN_BODY:
            raise ValueError("request body too large")
        try:
            b = json.loads(raw or b"{}")
        except ValueError:
            raise ValueError("the request body is not JSON") from None
        if not isinstance(b, dict):
            raise ValueError("the request body must be a JSON object")
        return b

    def _tokens_json(self, t: Tokens, name: str) -> dict[str, Any]:
        a = self.accounts.users[name]
        return {"access_token": t.access, "refresh_token": t.refresh, "expires_in": int(t.expires_in),
                "token_type": "Bearer", "user": {"name": a.name, "roles": list(a.roles)}}

    @requires(R.PUBLIC)
    async def login(self, req: web.Request) -> web.StreamResponse:
        try:
            b = await self._body(req)
        except ValueError as e:
            return json_error(400, str(e))
        user, pw = b.get("username"), b.get("password")
        if not isinstance(user, str) or not isinstance(pw, str) or not user or not pw:
            return json_error(400, "username and password (strings) are required")
        addr = req.remote or "?"
        wait = self.limiter.retry_after(user, addr)
        if wait > 0:
            self._event(f"login refused for {_clip(user)} from {addr}: too many failures", "WARNING",
                        user=user[:64], address=addr)
            return json_error(429, f"too many failed logins for this account or address; retry in {wait:.0f} s",
                              **{"Retry-After": str(int(wait) + 1)})
        a = await asyncio.get_running_loop().run_in_executor(None, self.accounts.authenticate_password, user, pw)
        if a is None:
            self.limiter.failed(user, addr)
            self._event(f"login failed for {_clip(user)} from {addr}", "WARNING", user=user[:64], address=addr)
            return json_error(401, "bad username or password")
        self.limiter.succeeded(user)
        t = self.sessions.login(a.name, addr)
        self._event(f"{a.name} logged in from {addr}", user=a.name, address=addr, session=t.session.id)
        resp = web.json_response(self._tokens_json(t, a.name))
        resp.set_cookie(COOKIE, t.cookie, httponly=True, samesite="Strict", path="/", secure=req.secure or None,
                        max_age=int(self.sessions.session_ttl))
        return resp

    @requires(R.PUBLIC)
    async def refresh(self, req: web.Request) -> web.StreamResponse:
        try:
            b = await self._body(req)
        except ValueError as e:
            return json_error(400, str(e))
        tok = b.get("refresh_token")
        if not isinstance(tok, str) or not tok:
            return json_error(400, "refresh_token (string) is required")
        t = self.sessions.refresh(tok[:200])
        if t is None:
            self._event(f"refresh refused from {req.remote}: unknown, spent or expired refresh token", "WARNING",
                        address=req.remote)
            return json_error(401, "refresh token unknown, already used or expired: log in again")
        if t.session.user not in self.accounts.users:
            self.sessions.end(t.session)
            return json_error(401, "the account no longer exists")
        return web.json_response(self._tokens_json(t, t.session.user))

    @requires(R.READ)
    async def logout(self, req: web.Request) -> web.StreamResponse:
        ident = identity(req)
        if ident.session is not None:
            self.sessions.end(ident.session)
            self._event(f"{ident.name} logged out", user=ident.name)
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    @requires(R.READ)
    async def me(self, req: web.Request) -> web.StreamResponse:
        ident = identity(req)
        return web.json_response({"name": ident.name, "roles": ident.roles, "privileges": sorted(ident.privileges),
                                  "via": ident.via})

    @requires(R.READ)
    async def list_keys(self, req: web.Request) -> web.StreamResponse:
        ident = identity(req)
        return web.json_response(self.accounts.get(ident.name).public()["keys"])

    @requires(R.READ)
    async def create_key(self, req: web.Request) -> web.StreamResponse:
        """Mint an API key for oneself; the password is asked again (a stolen token cannot)."""
        ident = identity(req)
        try:
            b = await self._body(req)
        except ValueError as e:
            return json_error(400, str(e))
        pw, label = b.get("password"), b.get("label", "")
        if not isinstance(pw, str) or not isinstance(label, str):
            return json_error(400, "password (string) is required; label is a string")
        addr = req.remote or "?"
        if self.limiter.retry_after(ident.name, addr) > 0:
            return json_error(429, "too many failed password checks; retry later")
        ok = await asyncio.get_running_loop().run_in_executor(None, self.accounts.authenticate_password,
                                                              ident.name, pw)
        if ok is None:
            self.limiter.failed(ident.name, addr)
            return json_error(403, "password check failed")
        key = self.accounts.create_key(ident.name, label, by=ident.name)
        self._audit_seen = len(self.accounts.audit)
        kid = key[len(KEY_PREFIX):].split("_", 1)[0]
        self._event(f"account {ident.name}: API key {kid} created by {ident.name}", account=ident.name,
                    action="key_create", by=ident.name, key=kid)
        return web.json_response({"id": kid, "key": key, "label": label}, status=201)

    @requires(R.READ)
    async def revoke_key(self, req: web.Request) -> web.StreamResponse:
        """Revoke one of one's own keys (an admin: anyone's, with ``{"user": NAME}``)."""
        ident = identity(req)
        try:
            b = await self._body(req)
            target = b.get("user", ident.name)
            if target != ident.name and not ident.has(R.ACCOUNTS):
                return json_error(403, f"revoking another account's key needs {R.ACCOUNTS!r}")
            self.accounts.revoke_key(str(target), req.match_info["id"], by=ident.name)
        except (AccountError, ValueError) as e:
            return json_error(404 if isinstance(e, AccountError) else 400, str(e))
        self._audit_seen = len(self.accounts.audit)
        self._event(f"account {target}: API key {req.match_info['id']} revoked by {ident.name}", account=target,
                    action="key_revoke", by=ident.name, key=req.match_info["id"])
        return web.json_response({"ok": True})

    @requires(R.ACCOUNTS)
    async def users(self, req: web.Request) -> web.StreamResponse:
        return web.json_response({"users": [a.public() for a in self.accounts.users.values()],
                                  "audit": self.accounts.audit[-200:], "roles": {
                                      n: {"privileges": sorted(r.privileges), "commands": list(r.commands),
                                          "description": r.description} for n, r in R.ROLES.items()},
                                  "sessions": len(self.sessions.sessions), "refused": dict(self.refused),
                                  "time": time.time()})

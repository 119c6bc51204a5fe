"""The web console's routes on the client interface's aiohttp app (see ground/web/__init__.py).

    >>> server = ApiServer(ops, archive=archive)       # registers WebConsole(server) itself
    >>> # http://127.0.0.1:8700/ -> the console

Everything is served from this machine: the page, the plugin, Open MCT's ``dist/``.  The
page's Content-Security-Policy allows scripts, styles, fonts, images and connections from
this origin only (``blob:`` for Open MCT's workers), so an injected script or a CDN
reference fails loudly instead of phoning out.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ground.api import schemas
from ground.archive import _decimate
from ground.auth import identity, requires
from ground.auth import roles as R
from ground.web.live import LiveFeed

if TYPE_CHECKING:
    from ground.api.server import ApiServer

log = logging.getLogger("ground.web")

OPENMCT_VERSION = "4.2.0"
HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

#: Open MCT needs inline styles (Vue binds style attributes), starts workers from blob: URLs and
#: compiles some Vue templates at run time ('unsafe-eval': new Function in openmct.js); scripts
#: still come only from this origin, never inline
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_OBJECT_BYTES = 256 * 1024  # a display layout with hundreds of items is tens of KiB
MAX_OBJECTS = 10000
KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_SPAN_S = 400 * 86400.0


_NAME = schemas.F("name", required=True)
_T = schemas.F("num", schemas.T_MIN, schemas.T_MAX)
_KEY = {"key": schemas.F("name", required=True)}
#: the console's routes in the client interface's request schemas (checked before the handlers);
#: PUT /api/web/objects/{key} is checked by its handler (an Open MCT object is free-form JSON)
SCHEMAS = {
    ("GET", "/api/web/history"): schemas.Schema(query={
        "node": _NAME, "packet": _NAME, "field": _NAME, "start": _T, "end": _T,
        "strategy": schemas.F("name", max_len=16), "size": schemas.F("int", 1, 20000),
        "limit": schemas.F("int", 1, 100000)}),
    ("GET", "/api/web/seismic"): schemas.Schema(query={"node": _NAME, "start": _T, "end": _T,
                                                       "size": schemas.F("int", 1, 20000)}),
    ("GET", "/api/web/objects"): schemas.Schema(),
    ("GET", "/api/web/objects/{key}"): schemas.Schema(path=_KEY),
    ("DELETE", "/api/web/objects/{key}"): schemas.Schema(path=_KEY),
    ("GET", "/api/web/info"): schemas.Schema(),
    ("GET", "/api/web/live"): schemas.Schema(),
}
schemas.SCHEMAS.update(SCHEMAS)


def openmct_dist() -> Path | None:
    """Open MCT's ``dist/`` folder (``LUNABASE_OPENMCT_DIST`` or ground/web/node_modules), or None."""
    env = os.environ.get("LUNABASE_OPENMCT_DIST")
    p = Path(env) if env else HERE / "node_modules" / "openmct" / "dist"
    return p if (p / "openmct.js").is_file() else None


def _json(o: Any, status: int = 200) -> web.Response:
    from ground.api.server import dumps

    return web.Response(text=dumps(o), status=status, content_type="application/json")


def _err(status: int, msg: str) -> web.Response:
    return _json({"error": msg}, status)


def _safe_file(root: Path, rel: str) -> Path | None:
    """root/rel when it is a regular file inside root (no '..', no symlink escape)."""
    if "\x00" in rel or rel.startswith("/"):
        return None
    try:
        p = (root / rel).resolve()
    except (OSError, ValueError):
        return None
    if root.resolve() not in p.parents or not p.is_file():
        return None
    return p


class ObjectStore:
    """The displays operators create (Open MCT domain objects as JSON), in the ops database.

    A table of its own, ``web_objects``, beside the event log and the alarms, so displays
    survive a restart of the ground and every operator sees the same ones.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("CREATE TABLE IF NOT EXISTS web_objects (key TEXT PRIMARY KEY, name TEXT, type TEXT,"
                        " body TEXT NOT NULL, created REAL NOT NULL, modified REAL NOT NULL, modified_by TEXT)")

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute("SELECT key, name, type, modified, modified_by FROM web_objects ORDER BY key").fetchall()
        return [{"key": k, "name": n, "type": t, "modified": m, "modified_by": b} for k, n, t, m, b in rows]

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            r = self.db.execute("SELECT body FROM web_objects WHERE key = ?", (key,)).fetchone()
        return None if r is None else json.loads(r[0])

    def put(self, key: str, obj: dict[str, Any], user: str) -> float:
        now = time.time()
        body = json.dumps(obj, separators=(",", ":"))
        with self._lock:
            n = self.db.execute("SELECT COUNT(*) FROM web_objects").fetchone()[0]
            exists = self.db.execute("SELECT 1 FROM web_objects WHERE key = ?", (key,)).fetchone()
            if not exists and n >= MAX_OBJECTS:
                raise ValueError(f"the ground keeps at most {MAX_OBJECTS} saved objects; delete some first")
            self.db.execute(
                "INSERT INTO web_objects VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                " name = excluded.name, type = excluded.type, body = excluded.body, modified = excluded.modified,"
                " modified_by = excluded.modified_by",
                (key, str(obj.get("name", ""))[:200], str(obj.get("type", ""))[:100], body, now, now, user))
        return now

    def delete(self, key: str) -> bool:
        with self._lock:
            return self.db.execute("DELETE FROM web_objects WHERE key = ?", (key,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self.db.close()


# The privilege each route needs (ground/auth/roles.py; the guard refuses a route that declares
# none).  The page and Open MCT's files are public: they hold no data, and the login page must load.
PUBLIC, READ, DISPLAYS = R.PUBLIC, R.READ, R.DISPLAYS


def _user(req: web.Request) -> str:
    """The authenticated account of the request (the guard ran before any handler)."""
    return identity(req).name


class WebConsole:
    """Registers the console's routes on ``server.app`` (call before the app starts)."""

    def __init__(self, server: ApiServer, archive: Any = None) -> None:
        self.server = server
        self.ops = server.ops
        self.archive = archive
        path = getattr(self.ops.store, "path", ":memory:")
        self.objects = ObjectStore(path)
        self.dist = openmct_dist()
        self.live = LiveFeed(server)
        if self.dist is None:
            log.warning("web console: Open MCT %s is not installed (run scripts/setup.sh, which runs "
                        "'npm ci' in ground/web); the console page will say so", OPENMCT_VERSION)
        app = server.app
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/console", self.root)
        r.add_get("/console/{path:.*}", self.static)
        r.add_get("/openmct/{path:.*}", self.openmct)
        r.add_get("/api/web/history", self.history)
        r.add_get("/api/web/seismic", self.seismic)
        r.add_get("/api/web/objects", self.list_objects)
        r.add_get("/api/web/objects/{key}", self.get_object)
        r.add_put("/api/web/objects/{key}", self.put_object)
        r.add_delete("/api/web/objects/{key}", self.delete_object)
        r.add_get("/api/web/info", self.info)
        r.add_get("/api/web/live", self.live_stream)
        app.on_response_prepare.append(self._headers)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        self.objects.close()

    @staticmethod
    async def _headers(req: web.Request, resp: web.StreamResponse) -> None:
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        if not req.path.startswith("/api/"):
            h.setdefault("Content-Security-Policy", CSP)
            h.setdefault("X-Frame-Options", "DENY")

    # -- pages and static files ----------------------------------------------------------

    @requires(PUBLIC)
    async def root(self, req: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    @requires(PUBLIC)
    async def static(self, req: web.Request) -> web.StreamResponse:
        rel = req.match_info["path"] or "index.html"
        if rel == "index.html" and self.dist is None:
            return web.Response(status=503, content_type="text/plain", text=(
                f"The web console needs NASA Open MCT {OPENMCT_VERSION}, which is not installed here.\n"
                "Run 'bash scripts/setup.sh' (it runs 'npm ci' in ground/web; Debian: apt-get install npm),\n"
                "or set LUNABASE_OPENMCT_DIST to an Open MCT dist/ folder, and restart the ground.\n"))
        p = _safe_file(STATIC, rel)
        if p is None:
            raise web.HTTPNotFound()
        resp = web.FileResponse(p)
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @requires(PUBLIC)
    async def openmct(self, req: web.Request) -> web.StreamResponse:
        if self.dist is None:
            return _err(503, f"Open MCT {OPENMCT_VERSION} is not installed: run scripts/setup.sh")
        p = _safe_file(self.dist, req.match_info["path"])
        if p is None:
            raise web.HTTPNotFound()
        resp = web.FileResponse(p)
        resp.headers["Cache-Control"] = "public, max-age=86400"
        return resp

    @requires(READ)
    async def info(self, req: web.Request) -> web.Response:
        return _json({"site": self.ops.site, "openmct": OPENMCT_VERSION if self.dist else None,
                      "archive": self.archive is not None, "time": time.time()})

    @requires(READ)
    async def live_stream(self, req: web.Request) -> web.StreamResponse:
        """Every sample of the parameters the console shows (ground/web/live.py)."""
        return await self.live.handle(req, identity(req))

    # -- history -------------------------------------------------------------------------

    def _range(self, q: Any) -> tuple[float, float]:
        try:
            t1 = float(q.get("end") or time.time())
            t0 = float(q.get("start") or t1 - 3600.0)
        except ValueError:
            raise ValueError("start= and end= are Unix seconds") from None
        if not (t1 > t0) or t1 - t0 > MAX_SPAN_S:
            raise ValueError(f"start must be before end, at most {MAX_SPAN_S / 86400:.0f} days apart")
        return t0, t1

    def _param(self, q: Any) -> tuple[str, str, str]:
        node, packet, field = q.get("node"), q.get("packet"), q.get("field")
        if not (node and packet and field):
            raise ValueError("node=, packet= and field= are required")
        self.ops.inventory.node(node)  # KeyError -> 404
        p = self.ops.dictionary.packet(packet)
        if field not in [f.name for f in p.numeric_fields]:
            raise KeyError(f"packet {p.name} has no numeric field {field!r}")
        return node, p.name, field

    @requires(READ)
    async def history(self, req: web.Request) -> web.Response:
        """One parameter's history: strategy=minmax (size buckets), latest, or page (limit rows)."""
        q = req.query
        try:
            node, packet, field = self._param(q)
            t0, t1 = self._range(q)
            strategy = q.get("strategy", "minmax")
            size = int(q.get("size") or 1000)
            limit = int(q.get("limit") or 5000)
        except ValueError as e:
            return _err(400, str(e))
        except KeyError as e:
            return _err(404, str(e.args[0]) if e.args else "not found")
        if strategy not in ("minmax", "latest", "page"):
            return _err(400, "strategy is one of minmax, latest, page")
        t_start = time.perf_counter()
        if self.archive is None:
            res = self.ops.params_view(node, packet, field, t0, t1, 2 * size)
            out: dict[str, Any] = {"time": res["time"], "value": res["value"], "count": res["count"],
                                   "source": "memory"}
            if strategy == "latest":
                out = {"time": out["time"][-1:], "value": out["value"][-1:], "count": min(1, len(out["time"])),
                       "source": "memory"}
        else:
            a = self.archive
            site = self.ops.site
            if strategy == "minmax":
                fn: Any = functools.partial(_decimate.minmax, a, packet, field, node, t0, t1, size, site=site)
            elif strategy == "latest":
                fn = functools.partial(_decimate.latest, a, packet, field, node, t1, lookback=max(t1 - t0, 3600.0),
                                       site=site)
            else:
                fn = functools.partial(_decimate.page_after, a, packet, field, node, t0, t1, limit, site=site)
            out = await asyncio.get_running_loop().run_in_executor(None, fn)
            out["source"] = "archive"
        out.update(node=node, packet=packet, field=field, start=t0, end=t1, strategy=strategy,
                   ms=round((time.perf_counter() - t_start) * 1000, 1))
        return _json(out)

    @requires(READ)
    async def seismic(self, req: web.Request) -> web.Response:
        """A waveform between start and end from the archive (min/max per bucket when long)."""
        q = req.query
        try:
            node = q.get("node") or ""
            self.ops.inventory.node(node)
            t0, t1 = self._range(q)
            size = int(q.get("size") or 2000)
        except ValueError as e:
            return _err(400, str(e))
        except KeyError as e:
            return _err(404, str(e.args[0]) if e.args else "not found")
        if self.archive is None:
            return _json(self.ops.seismic_view(node, t1 - t0, 2 * size) | {"source": "memory"})
        a, site = self.archive, self.ops.site
        out = await asyncio.get_running_loop().run_in_executor(
            None, lambda: _decimate.seismic(a, node, t0, t1, size, site=site))
        out.update(node=node, start=t0, end=t1, source="archive")
        return _json(out)

    # -- saved displays --------------------------------------------------------------------

    def _key(self, req: web.Request) -> str:
        key = req.match_info["key"]
        if not KEY_RE.match(key):
            raise web.HTTPBadRequest(text=json.dumps({"error": "an object key is 1-64 of A-Z a-z 0-9 . _ -"}),
                                     content_type="application/json")
        return key

    @requires(READ)
    async def list_objects(self, req: web.Request) -> web.Response:
        return _json(self.objects.list())

    @requires(READ)
    async def get_object(self, req: web.Request) -> web.Response:
        key = self._key(req)
        obj = self.objects.get(key)
        return _err(404, f"no saved object {key}") if obj is None else _json(obj)

    @requires(DISPLAYS)
    async def put_object(self, req: web.Request) -> web.Response:
        key = self._key(req)
        if req.content_type != "application/json":
            return _err(415, "send the object as application/json")
        if (req.content_length or 0) > MAX_OBJECT_BYTES:
            return _err(413, f"an object is at most {MAX_OBJECT_BYTES} bytes")
        raw = await req.content.read(MAX_OBJECT_BYTES + 1)
        if len(raw) > MAX_OBJECT_BYTES:
            return _err(413, f"an object is at most {MAX_OBJECT_BYTES} bytes")
        try:
            obj = json.loads(raw)
        except ValueError as e:
            return _err(400, f"not JSON: {e}")
        if not isinstance(obj, dict) or not isinstance(obj.get("identifier"), dict):
            return _err(400, "an Open MCT domain object (a JSON object with an identifier) is expected")
        if obj["identifier"].get("key") != key:
            return _err(400, f"the object's identifier.key ({obj['identifier'].get('key')!r}) is not {key!r}")
        user = _user(req)
        try:
            modified = self.objects.put(key, obj, user)
        except ValueError as e:
            return _err(409, str(e))
        log.info("saved display %s (%s, %s) by %s", key, obj.get("type"), obj.get("name"), user)
        self.ops.hub.publish({"type": "web_object", "key": key, "modified": modified, "by": user})
        return _json({"ok": True, "key": key, "modified": modified})

    @requires(DISPLAYS)
    async def delete_object(self, req: web.Request) -> web.Response:
        key = self._key(req)
        if not self.objects.delete(key):
            return _err(404, f"no saved object {key}")
        log.info("deleted display %s by %s", key, _user(req))
        self.ops.hub.publish({"type": "web_object", "key": key, "deleted": True, "by": _user(req)})
        return _json({"ok": True, "key": key})

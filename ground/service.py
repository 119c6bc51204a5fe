"""``lunabase ground``: ingest + operations layer + client interface in one asyncio process.

    async with GroundService(broker="mqtt://127.0.0.1:1884", inventory=inv,
                             archive="sqlite:///archive.db", api_port=0) as g:
        ... g.api.url, g.ops ...

Ingest is ground-data's ``IngestWorker`` (archive commit, then our ``Operations`` as its
sink); telecommands go out on a separate MQTT connection with the ground's account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from ground.api import ApiServer
from ground.archive._gaps import GAP_STATES
from ground.auth import AccountStore, Auth, TwoPersonPolicy
from ground.ingest import link_view
from ground.ops import Operations, OpsStore
from ground.ratelog import limit_logger
from wire.brokerurl import BrokerUrl
from wire.inventory import Inventory

log = logging.getLogger("ground.service")

#: the longest history one /api/params request may cover (page through longer ones)
MAX_HISTORY_DAYS = 31


class CommandLink:
    """The ground's own MQTT connection for publishing telecommands (QoS 1), reconnecting."""

    def __init__(self, broker: BrokerUrl, username: str | None, password: str | None,
                 tls: ssl.SSLContext | None = None, client_id: str = "lunabase-ground-cmd") -> None:
        self.broker, self.username, self.password, self.tls = broker, username, password, tls
        self.client_id = client_id
        self.client: Any = None
        self.connected = asyncio.Event()
        self.on_connect: list[Any] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.client is None or not self.connected.is_set():
            raise ConnectionError(f"not connected to {self.broker}")
        await self.client.publish(topic, payload, qos=1)

    async def run(self) -> None:
        import aiomqtt

        delay = 0.2
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=self.client_id,
                                          username=self.username, password=self.password,
                                          tls_context=self.tls, keepalive=30) as c:
                    self.client = c
                    self.connected.set()
                    delay = 0.2
                    log.info("command link connected to %s as %s", self.broker, self.username or "anonymous")
                    for fn in self.on_connect:
                        fn()
                    async for _ in c.messages:  # keeps the connection serviced
                        pass
            except aiomqtt.MqttError as e:
                log.warning("command link to %s: %s; retrying in %.1f s", self.broker, e, delay)
            finally:
                self.connected.clear()
                self.client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def broker_tls(ca: str | Path | None = None) -> ssl.SSLContext:
    """A client context for mqtts: the broker's certificate verified (chain to ``ca``, or the
    system's CAs; host name), TLS 1.2 at least."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def api_tls(cert: str | Path, key: str | Path | None = None) -> ssl.SSLContext:
    """A server context for the client interface (HTTPS/WSS) from a PEM certificate (+ key)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


class GroundService:
    """Everything ``lunabase ground`` runs; ``start()``/``stop()`` or ``async with``."""

    def __init__(
        self,
        broker: str,
        inventory: Inventory | str | Path,
        archive: str = "sqlite:///lunabase-archive.db",
        *,
        ops_db: str | Path | None = None,
        api_host: str = "127.0.0.1",
        api_port: int = 8700,
        light_time: float = 1.28,
        time_sync_s: float = 600.0,
        ack_timeout: float = 5.0,
        exec_timeout: float = 15.0,
        grace: float = 30.0,
        keep_days: float = 90.0,
        client_id: str = "lunabase-ground",
        share: str | None = None,
        tls: ssl.SSLContext | None = None,
        instance: str = "",
        ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        users: AccountStore | str | Path | None = None,
        allowed_hosts: list[str] | tuple[str, ...] = (),
        allowed_origins: list[str] | tuple[str, ...] = (),
        two_person: TwoPersonPolicy | None = None,
        durable: bool = False,
        custody_s: float = 1.0,
        gap_settle_s: float = 10.0,
        refill_per_minute: int = 30,
        custody_give_up_s: float = 600.0,
        leader_lock: bool | None = None,
        ground_id: str | None = None,
    ) -> None:
        """``ca``: the CA that must have signed the broker's certificate (mqtts; default the
        system's).  ``tls_cert``/``tls_key``: serve the client interface over HTTPS.
        ``custody_s``: how often nodes are told what the archive committed (docs/custody.md);
        0 = never (nodes in custody mode then keep and re-send everything).
        ``custody_give_up_s``: how long a hole may stall a node's custody before the ground
        takes those packets for gone (dropped by the node).
        ``gap_settle_s``: a sequence gap is reported once it stayed open this long (give every
        ingest worker the same; ground/archive/_gaps.py).  ``refill_per_minute``: at most this
        many automatic REPLAYs a minute (0: no automatic refill; ground/ops/refill.py).
        ``leader_lock``: take part in the archive's leader lock, so that of several grounds
        sharing it only one runs the ops actions (ground/ops/leader.py); None = on for a
        PostgreSQL archive, off for SQLite.  ``ground_id`` names this ground to the others."""
        self.leader_lock = leader_lock if leader_lock is not None else archive.startswith(("postgresql://",
                                                                                             "postgres://"))
        self.ground_id = ground_id or f"{client_id}{'-' + instance if instance else ''}"
        self.leadership: Any = None
        self.broker = BrokerUrl.parse(broker)
        self.durable = durable
        self.custody_s, self.custody_give_up_s = custody_s, custody_give_up_s
        self.gap_settle_s = gap_settle_s  # ground/archive/_gaps.py: the same on every worker
        self.refill_per_minute = refill_per_minute  # automatic REPLAYs a minute at most (0: no refill)
        self.custody: Any = None
        self.inventory = inventory if isinstance(inventory, Inventory) else Inventory.load(inventory)
        self.archive_url = archive
        self.ops_db = str(ops_db) if ops_db else _default_ops_db(archive)
        # the broker ties client ids to accounts (use_username_as_clientid): the ingest and
        # the command link each connect with an account of their own from the inventory
        # (instance "": ground / ground-cmd; instance "2": ground-2 / ground-2-cmd)
        ingest_acct = self.inventory.ground_account(instance)
        cmd_acct = self.inventory.ground_account(f"{instance}-cmd" if instance else "cmd")
        if self.broker.username:  # explicit credentials in the URL: used for both
            ingest_acct = cmd_acct = (self.broker.username, self.broker.password or "")
        if not ingest_acct[1]:  # anonymous broker (tests)
            ingest_acct = cmd_acct = (self.broker.username or "", "")
        self.username, self.password = ingest_acct[0] or None, ingest_acct[1] or None
        self.cmd_username, self.cmd_password = cmd_acct[0] or None, cmd_acct[1] or None
        self.tls = tls if tls is not None else (broker_tls(ca) if self.broker.tls else None)
        self.api_tls = api_tls(tls_cert, tls_key) if tls_cert else None
        self.client_id, self.share = client_id, share
        self.api_host, self.api_port = api_host, api_port
        self._opts: dict[str, Any] = dict(light_time=light_time, ack_timeout=ack_timeout, exec_timeout=exec_timeout,
                                          time_sync_s=time_sync_s,
                                          grace=grace, keep_days=keep_days)
        self.archive: Any = None
        self.ingest: Any = None
        self.ops: Operations | None = None
        self.api: ApiServer | None = None
        self.cmdlink: CommandLink | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        # accounts: a secrets file (refused when others may read it) or, for tests, in memory
        if users is None:
            self.users = AccountStore()
        elif isinstance(users, AccountStore):
            self.users = users
        else:
            self.users = AccountStore.open(users)
        self.auth = Auth(self.users, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins,
                         policy=two_person)

    async def start(self) -> GroundService:
        from ground.archive import open_archive
        from ground.ingest import IngestWorker

        # asyncio logs every failed accept() (e.g. out of descriptors) and aiohttp every failed
        # request with a traceback: once per 10 s per message is enough (the count follows)
        limit_logger("asyncio", 10.0)
        limit_logger("aiohttp.server", 10.0)
        is_sqlite = not self.archive_url.startswith(("postgresql://", "postgres://"))
        archive_kw: dict[str, Any] = {"durable": True} if self.durable and is_sqlite else {}  # a SQLite option
        self.archive = open_archive(self.archive_url, **archive_kw)
        self.archive.gap_settle_s = self.gap_settle_s
        log.info("archive %s; ops database %s", self.archive_url, self.ops_db)
        self.cmdlink = CommandLink(self.broker, self.cmd_username, self.cmd_password, self.tls, self.client_id + "-cmd")
        store = OpsStore(self.ops_db)
        ops = self.ops = Operations(self.inventory, store, publish=self.cmdlink.publish, history=self._history,
                                    **self._opts)
        site = self.inventory.site
        ops.time_correct = lambda node, c: self.archive.set_time_correction(site, node, c)
        ops.raw_fn = self._raw_packets
        # only the inventory's nodes get a link entry each; others are quarantined under one
        known = {(self.inventory.site, n.id) for n in self.inventory.nodes}
        sinks: list[Any] = [ops]
        if self.custody_s > 0 and self.share:
            # each worker of a shared group sees part of a node's packets: custody computed
            # from one part would stall, then skip holes it cannot judge (docs/custody.md)
            log.warning("custody acknowledgements off: ingest shares a subscription (--share %s); nodes in "
                        "custody mode keep their packets until a ground without --share confirms them", self.share)
        elif self.custody_s > 0:
            from ground.custody import CustodySender

            self.custody = CustodySender(self.inventory, self.cmdlink.publish, self.ops_db, self.custody_s,
                                          self.custody_give_up_s)
            sinks.append(self.custody)
        self.ingest = IngestWorker(self.archive, self.broker.host, self.broker.port, username=self.username,
                                   password=self.password, client_id=self.client_id, share=self.share,
                                   sinks=sinks, tls=self.tls, pipeline=None, known=known)
        ops.links_fn = self._links
        ops.refiller.archive = self.archive
        ops.refiller.max_per_minute = max(0, self.refill_per_minute)
        ops.refiller.enabled = self.refill_per_minute > 0
        ops.refiller.link_up = self.cmdlink.connected.is_set
        ops.health_fn = self._health
        self.cmdlink.on_connect.append(lambda: asyncio.ensure_future(ops.commander.pump()))
        if self.leader_lock:
            from ground.ops.leader import Leadership, identity, open_lock

            # a follower until the lock says otherwise: the first check runs before the API
            # opens (a ground alone leads from its first request)
            self.leadership = ops.leadership = Leadership(open_lock(self.archive_url, site, identity(self.ground_id, None)))
            ops.fresh_to_me = True  # the other grounds archive packets first: ops must see them all
            if self.custody is not None:
                self.custody.active = ops.leading
            await self.leadership.step()
        self.api = await ApiServer(self.ops, self.api_host, self.api_port, auth=self.auth, archive=self.archive,
                                   ssl_context=self.api_tls).start()
        if self.leadership is not None:
            self.leadership.lock.me["api"] = self.api.url
            if self.leadership.leading:  # the holder row said "no client interface" until now
                await asyncio.to_thread(self.leadership.lock.refresh)
        if not self.users.users:
            log.warning("no accounts: nobody can use the client interface (lunabase users add NAME --role admin)")
        log.info("site %s: %d nodes in the inventory; broker %s as %s; client interface %s",
                 self.inventory.site, len(self.inventory.nodes), self.broker, self.username or "anonymous",
                 self.api.url)
        store.event("ground", f"ground started: broker {self.broker}, API {self.api.url}", site=self.inventory.site)
        self._tasks = [asyncio.create_task(self.ingest.run(), name="ingest"),
                       asyncio.create_task(self.cmdlink.run(), name="cmdlink"),
                       asyncio.create_task(self.ops.run(), name="ops-timers")]
        if self.custody is not None:
            self._tasks.append(asyncio.create_task(self.custody.run(), name="custody"))
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(self.leadership.run(), name="leader-lock"))
        return self

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Until ingest and the command link are both connected to the broker."""
        assert self.ingest is not None and self.cmdlink is not None, "start() first"
        await asyncio.wait_for(asyncio.gather(self.ingest.connected.wait(), self.cmdlink.connected.wait()), timeout)

    async def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        for t in self._tasks[1:]:
            t.cancel()
        if self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._tasks[0], 5)
            self._tasks[0].cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.api is not None:
            await self.api.stop()
        if self.leadership is not None:
            self.leadership.close()  # the next ground takes over at its next check
        if self.ops is not None:
            self.ops.store.close()
        if self.custody is not None:
            self.custody.close()
        if self.archive is not None:
            self.archive.close()

    async def __aenter__(self) -> GroundService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- adapters to ground-data's archive and counters ------------------------------------

    def _history(self, node: str, packet: str, field: str, since: float | None, until: float | None,
                  limit: int) -> dict[str, Any]:
        # bounded whatever is asked: at most MAX_HISTORY_DAYS, at most ``limit`` points,
        # thinned by the database (the API runs this in a worker thread)
        until = until if until is not None else time.time() + 3600.0
        since = since if since is not None else until - 7200.0
        if until - since > MAX_HISTORY_DAYS * 86400.0:
            raise ValueError(f"history range longer than {MAX_HISTORY_DAYS} days: ask for a shorter one")
        r = self.archive.parameter_decimated(f"{packet}.{field}", node, since, until, max(1, min(limit, 10000)))
        return {"node": node, "packet": packet, "field": field, "source": "archive", "count": r["count"],
                "count_exact": r.get("exact", True),
                "time": [float(x) for x in r["time"]], "value": [float(x) for x in r["value"]],
                "time_quality": list(r.get("time_quality") or [])}

    def _raw_packets(self, node: str, limit: int) -> list[tuple[float, int, int, int, bytes]]:
        rows = self.archive.latest_raw(node, limit)
        return [(r.received, r.apid, r.seq, r.ticks, r.data) for r in rows]

    def _health(self) -> dict[str, dict[str, Any]]:
        """The parts of /api/health only the service can see: ingest, archive, broker, API."""
        from ground import health

        w = self.ingest
        parts = {"ingest": health.ingest_part(w), "archive": health.archive_part(self.archive, w.pipeline),
                 "broker": health.broker_part(w.connected.is_set(),
                                              self.cmdlink is not None and self.cmdlink.connected.is_set(),
                                              w.last_failure)}
        if self.api is not None:
            parts["api"] = health.part(True, **self.api.limiter.stats(), websockets=self.api.clients)
        if self.custody is not None:
            nodes = self.custody.view()
            parts["custody"] = health.part(True, interval_s=self.custody.interval,
                                           sent=sum(v["sent"] for v in nodes.values()),
                                           failed=sum(v["failed"] for v in nodes.values()),
                                           skipped=sum(v["skipped"] for v in nodes.values()),
                                           confirmed=sum(v["confirmed"] for v in nodes.values()), nodes=nodes)
        return parts

    def _links(self) -> dict[str, dict[str, Any]]:
        """Per-link counters: this ground's ingest stream, gaps from the archive (every worker's)."""
        site = self.inventory.site
        snap = self.ingest.pipeline.snapshot(archive_gaps=False)["links"]
        out = {d["node"]: link_view(d) for d in snap.values() if d["site"] == site}
        gaps = self.archive.gap_summary(site)
        for (_s, node), g in gaps.items():
            v = out.get(node)
            if v is not None:
                v.update(gaps=g["gaps"], missing=g["missing"], lost=g["lost"],
                         gap_states=g["states"])
        for node, v in out.items():
            if (site, node) not in gaps:
                v.update(gaps=0, missing=0, lost=0, gap_states=dict.fromkeys(GAP_STATES, 0))
        return out


def stride(xs: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items evenly spread over ``xs``, the last one always kept."""
    n = len(xs)
    if n <= limit or limit <= 0:
        return xs
    step = n / limit
    return [xs[n - 1 - int(i * step)] for i in range(limit)][::-1]


def _default_ops_db(archive: str) -> str:
    if archive.startswith("sqlite://") or "://" not in archive:
        path = archive[len("sqlite:///"):] if archive.startswith("sqlite:///") else archive
        p = Path(path)
        return str(p.with_name(p.stem + "-ops.db"))
    return "lunabase-ops.db"

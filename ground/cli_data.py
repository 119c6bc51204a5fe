"""``lunabase`` subcommands of the ground data path: ingest, broker-config, replay, export, archive.

Heavy imports live inside the handlers so that `lunabase --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import ssl
import sys
import time
from typing import Any

from wire.brokerurl import BrokerUrl, BrokerUrlError

log = logging.getLogger("lunabase.ingest")


def _broker(url: str) -> tuple[str, int, str | None, str | None, bool]:
    try:
        b = BrokerUrl.parse(url)
    except BrokerUrlError as e:
        raise SystemExit(str(e)) from None
    return b.host, b.port, b.username, b.password, b.tls


def _time(s: str | None) -> float | None:
    """Unix seconds, or an ISO-8601 date/time (UTC when no zone), or -<N>[smhd] relative to now."""
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        pass
    if s.startswith("-") and s[-1] in "smhd":
        return time.time() - float(s[1:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[s[-1]]
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _time_arg(s: str) -> float:
    try:
        t = _time(s)
    except (ValueError, KeyError):
        t = None
    if t is None:
        raise argparse.ArgumentTypeError(f"{s!r}: give Unix seconds, ISO-8601 (2026-11-23T10:00) or -30m / -2h / -1d")
    return t


def _speed_arg(s: str) -> float | None:
    """Replay speed: None for as fast as possible ("max" or 0)."""
    if s == "max":
        return None
    try:
        v = float(s.rstrip("x"))
    except ValueError:
        v = -1.0
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s!r}: give a factor (1, 10x, 0.5) or max")
    return v or None


def _creds(a: argparse.Namespace, user: str | None, pw: str | None) -> tuple[str | None, str | None]:
    if getattr(a, "inventory", None):
        from wire.inventory import Inventory

        inv = Inventory.load(a.inventory)
        acct = inv.ground_account(getattr(a, "account", "") or "")
        user, pw = user or acct[0], pw or acct[1]
    user = a.username or user
    pw = a.password or os.environ.get("LUNABASE_MQTT_PASSWORD") or pw
    return user, pw


def _tls(enabled: bool, ca: str | None) -> ssl.SSLContext | None:
    if not enabled and not ca:
        return None
    return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()


# ----------------------------------------------------------------------------- ingest
def run_ingest(a: argparse.Namespace) -> int:
    import ground.parse as gp
    from ground.archive import open_archive
    from ground.ingest import IngestWorker

    host, port, user, pw, tls = _broker(a.broker)
    user, pw = _creds(a, user, pw)
    archive = open_archive(a.archive)
    archive.gap_settle_s = a.gap_settle
    log.info("archive %s; parser %s", archive.url, gp.IMPLEMENTATION)
    w = IngestWorker(archive, host, port, username=user, password=pw, client_id=a.client_id, share=a.share,
                     tls=_tls(tls, a.ca), protocol=a.protocol, max_batch=a.max_batch)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, w.stop)
        task = asyncio.create_task(w.run())
        last = last_log = 0.0
        while not task.done():
            await asyncio.sleep(0.2)
            now = time.monotonic()
            if a.stats_file and now - last >= a.stats_interval:
                last = now
                tmp = a.stats_file + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(w.stats(), f)
                os.replace(tmp, a.stats_file)
            if a.log_stats and now - last_log >= a.log_stats:
                last_log = now
                snap = w.stats()
                t = snap["totals"]
                ag = [d for d in snap.get("archive_gaps", {}).values() if isinstance(d, dict)]
                log.info("ingest: %d packets (%.0f/s), %d duplicates, %d gaps in the archive (%d packets missing),"
                         " rejected %s", t["fresh"], t["packets_per_s"], t["duplicates"],
                         sum(d["gaps"] for d in ag), sum(d["missing"] for d in ag),
                         {r: e["count"] for r, e in t["errors"].items()} or "nothing")
        await task

    try:
        asyncio.run(main())
    finally:
        archive.close()
    return 0


# ----------------------------------------------------------------------------- broker-config
def run_broker_config(a: argparse.Namespace) -> int:
    from ground.broker import write_broker_config
    from wire.inventory import Inventory

    inv = Inventory.load(a.inventory)
    files = write_broker_config(inv, a.out, port=a.port, bind=a.bind, tls_port=a.tls_port,
                                use_mosquitto_passwd=False if a.python_hash else None, user=a.user,
                                plaintext=a.plaintext, tls_hosts=a.tls_host, renew_server_cert=a.renew_server_cert)
    print(f"site {inv.site}: {len(inv.nodes)} node accounts + ground account {inv.ground_user!r} and "
          f"{len(inv.ground_clients)} ground client accounts ({inv.ground_user}-{{{','.join(inv.ground_clients)}}})")
    print(f"  {files.config}\n  {files.password_file} (mode 0600)\n  {files.acl_file} (mode 0600)")
    if files.tls:
        print(f"  TLS on port {a.tls_port}{'' if a.plaintext else ' (plaintext listener closed)'}: "
              f"CA {files.tls.cafile} (give it to clients: --ca), server certificate {files.tls.certfile}, "
              f"keys {files.tls.keyfile} and {files.tls.cafile.with_suffix('.key')} (mode 0600; keep ca.key offline)")
    print(f"run: mosquitto -c {files.config}")
    if not a.user:
        print("  (started as root, mosquitto switches to user 'mosquitto': chown the directory to it, or use --user)")
    return 0


# ----------------------------------------------------------------------------- replay
def run_replay(a: argparse.Namespace) -> int:
    from ground.archive import open_archive
    from ground.replay import Replayer

    archive = open_archive(a.archive, create=False)
    r = Replayer(archive, a.t0, a.t1, speed=a.speed, node=a.node)
    try:
        if a.broker:
            host, port, user, pw, tls = _broker(a.broker)
            user, pw = _creds(a, user, pw)
            n = asyncio.run(r.to_broker(host, port, user, pw, _tls(tls, a.ca)))
            print(f"replayed {n} packets to {a.broker}")
        else:
            from ground.ingest import Pipeline

            target = open_archive(a.into)
            n = asyncio.run(r.to_pipeline(Pipeline(target)))
            print(f"replayed {n} packets into {target.url}")
            target.close()
    finally:
        archive.close()
    return 0


# ----------------------------------------------------------------------------- export
def run_export(a: argparse.Namespace) -> int:
    from ground.archive import open_archive
    from ground.export import export_packet, export_parameters

    archive = open_archive(a.archive, create=False)
    try:
        t0, t1 = a.t0, a.t1
        if a.packet:
            n = export_packet(archive, a.packet.upper(), a.out, node=a.node, t0=t0, t1=t1, fmt=a.format)
        elif a.param:
            names = [p for x in a.param for p in x.split(",") if p]
            n = export_parameters(archive, names, a.out, node=a.node, t0=t0, t1=t1, fmt=a.format)
        else:
            raise SystemExit("give --packet NAME or --param PACKET.field[,...]")
    finally:
        archive.close()
    print(f"{n} rows -> {a.out}")
    return 0


# ----------------------------------------------------------------------------- archive
def run_archive(a: argparse.Namespace) -> int:
    from ground.archive import open_archive

    archive = open_archive(a.archive, create=False)
    try:
        if a.action == "rebuild":
            print(f"rebuilt decoded tables from {archive.rebuild()} raw packets")
        elif a.action == "retention":
            if a.days is None:
                raise SystemExit("retention needs --days N")
            print(f"deleted {archive.retention(a.days)} raw packets older than {a.days} days")
        else:
            nodes = archive.nodes()
            print(f"{archive.url}: {archive.count_raw()} raw packets from {len(nodes)} nodes")
            for s, n in nodes:
                print(f"  {s}/{n}: {archive.count_raw(node=n, site=s)}")
            q = archive.count_quarantined()
            if q:  # what ingest could not accept (docs/ground-data.md, the quarantine)
                print(f"quarantined messages kept: {sum(q.values())} "
                      + ", ".join(f"{r} {k}" for r, k in sorted(q.items())))
                for m in archive.quarantined(limit=5):
                    print(f"  {m['reason']:<14} {m['size']:>8} B  {m['topic'][:60]}  {m['detail'][:60]}")
    finally:
        archive.close()
    return 0


def _broker_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--username", help="broker user (default: from --inventory or the URL)")
    p.add_argument("--password", help="broker password (or env LUNABASE_MQTT_PASSWORD)")
    p.add_argument("--inventory", help="base inventory: the ground account's credentials")
    p.add_argument("--ca", help="CA certificate for mqtts:// (TLS)")


def register(sub: Any) -> None:
    """Add ingest, broker-config, replay, export and archive to the `lunabase` subcommands."""
    RD = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("ingest", help="run an ingest worker: broker -> archive", formatter_class=RD,
                       description="Subscribe to every node's tm/status topics and archive them.\n\n"
                       "examples:\n"
                       "  lunabase ingest --broker mqtt://127.0.0.1:1884 --inventory base.toml --archive sqlite:///base.db\n"
                       "  lunabase ingest --broker mqtts://ground:PW@broker:8883 --ca ca.crt \\\n"
                       "      --archive postgresql://lunabase@db/lunabase --share ingest --inventory base.toml --account 2")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://[user:pass@]host:port or mqtts://")
    _broker_args(p)
    p.add_argument("--archive", default="sqlite:///lunabase-archive.db", help="sqlite:///path or postgresql://...")
    p.add_argument("--share", help="join MQTT shared subscription group GROUP ($share/GROUP/...)")
    p.add_argument("--client-id", default="lunabase-ingest",
                   help="MQTT client id (the persistent session's name; a secured broker uses the account name)")
    p.add_argument("--account", default="", metavar="NAME",
                   help="with --inventory: the ground client account <ground_user>-NAME (one per concurrent "
                        "worker: the broker ties client ids to accounts); default the main ground account")
    p.add_argument("--protocol", type=int, choices=(4, 5), default=4, help="MQTT 3.1.1 (4, default) or 5")
    p.add_argument("--max-batch", type=int, default=4000, help="messages per archive transaction at most")
    p.add_argument("--gap-settle", type=float, default=10.0, metavar="S",
                   help="a sequence gap is reported after it stayed open S s (default 10; the same on every "
                        "worker and the ground)")
    p.add_argument("--stats-file", help="write the counter snapshot (JSON) here every --stats-interval s")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="S", help="seconds between --stats-file writes")
    p.add_argument("--log-stats", type=float, default=0.0, metavar="S", help="log a counter summary every S s")
    p.set_defaults(func=run_ingest)

    p = sub.add_parser("broker-config", help="mosquitto config, password file and ACLs from the inventory",
                       formatter_class=RD, description="example:\n"
                       "  lunabase broker-config --inventory base.toml --out broker/ --port 1884 --tls-port 8884\n"
                       "  mosquitto -c broker/mosquitto.conf")
    p.add_argument("--inventory", required=True, help="base inventory TOML: one account + ACL per node, the ground's")
    p.add_argument("--out", required=True, help="directory for mosquitto.conf, passwd, acl (and tls/)")
    p.add_argument("--port", type=int, default=1883, help="plain MQTT listener port (default 1883)")
    p.add_argument("--bind", default="127.0.0.1", help="listen address (0.0.0.0 for every interface)")
    p.add_argument("--tls-port", type=int, help="a TLS listener on this port (site CA and server certificate made "
                   "in OUT/tls with the openssl CLI, kept on later runs); the plaintext listener is then closed")
    p.add_argument("--tls-host", action="append", default=[], metavar="NAME",
                   help="a name or IP address nodes and the ground use to reach the broker (repeatable; "
                        "localhost and 127.0.0.1 are always in the certificate)")
    p.add_argument("--plaintext", action="store_true", help="keep the plaintext listener (--port) next to TLS")
    p.add_argument("--renew-server-cert", action="store_true",
                   help="issue a new server certificate (same CA: flashed nodes keep working)")
    p.add_argument("--user", help="account mosquitto runs as when started as root (must own the files)")
    p.add_argument("--python-hash", action="store_true", help="hash passwords in Python, not with mosquitto_passwd")
    p.set_defaults(func=run_broker_config)

    p = sub.add_parser("replay", help="replay a time range of the raw archive as if live", formatter_class=RD,
                       description="examples:\n"
                       "  lunabase replay --archive sqlite:///base.db --from=-1h --speed 10x --broker mqtt://127.0.0.1:1885\n"
                       "  lunabase replay --archive sqlite:///base.db --from 2026-11-23T10:00 --speed max --into sqlite:///copy.db")
    p.add_argument("--archive", required=True)
    p.add_argument("--from", dest="t0", type=_time_arg,
                   help="reception time: Unix s, ISO-8601 (UTC) or --from=-30m / -2h / -1d (with '=')")
    p.add_argument("--to", dest="t1", type=_time_arg, help="end of the range (same forms; default: the end of the archive)")
    p.add_argument("--node", help="only this node (default: every node)")
    p.add_argument("--speed", default="1", type=_speed_arg, help="1, 10x, 0.5, ... or max (default 1: as recorded)")
    p.add_argument("--broker", help="publish to this broker (mqtt://...)")
    p.add_argument("--into", default="sqlite:///lunabase-replay.db", help="else ingest into this archive")
    _broker_args(p)
    p.set_defaults(func=run_replay)

    p = sub.add_parser("export", help="export parameters to CSV or Parquet", formatter_class=RD,
                       description="examples:\n"
                       "  lunabase export --archive sqlite:///base.db --packet HK --node n01 --out hk.parquet\n"
                       "  lunabase export --archive sqlite:///base.db --param HK.free_heap,POWER.battery_soc --from=-1d --out p.csv")
    p.add_argument("--archive", required=True)
    p.add_argument("--packet", help="one packet type, one column per field")
    p.add_argument("--param", action="append", help="PACKET.field (repeatable, or comma separated): long format")
    p.add_argument("--node", help="only this node (default: every node)")
    p.add_argument("--from", dest="t0", type=_time_arg,
                   help="packet time tag: Unix s, ISO-8601 (UTC) or --from=-30m / -2h / -1d (with '=')")
    p.add_argument("--to", dest="t1", type=_time_arg, help="end of the range (same forms; default: the newest packet)")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the --out suffix")
    p.add_argument("--out", required=True, help="file to write (.csv or .parquet)")
    p.set_defaults(func=run_export)

    p = sub.add_parser("archive", help="archive maintenance: info, rebuild decoded tables, retention",
                       formatter_class=RD, description="actions:\n"
                       "  info       raw packets per node, quarantined messages by reason\n"
                       "  rebuild    recreate every decoded table from the raw log (after a dictionary change)\n"
                       "  retention  delete raw packets, decoded rows and status received more than --days ago\n\n"
                       "The archive must exist (sqlite:///rel/path is relative, sqlite:////abs/path absolute).\n\n"
                       "examples:\n"
                       "  lunabase archive info --archive sqlite:///base.db\n"
                       "  lunabase archive rebuild --archive postgresql://lunabase@db/lunabase\n"
                       "  lunabase archive retention --archive sqlite:///base.db --days 365")
    p.add_argument("action", choices=("info", "rebuild", "retention"))
    p.add_argument("--archive", required=True, help="sqlite:///path or postgresql://...")
    p.add_argument("--days", type=float, help="retention: delete what was received more than DAYS ago")
    p.set_defaults(func=run_archive)


if __name__ == "__main__":  # python -m ground.cli_data ingest ... (used by the fault tests)
    ap = argparse.ArgumentParser(prog="python -m ground.cli_data")
    ap.add_argument("-v", "--verbose", action="count", default=1)
    register(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    sys.exit(args.func(args))

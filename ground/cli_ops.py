"""``lunabase ground`` (run the ground segment), ``lunabase command`` (send a telecommand),
``lunabase approve``/``deny`` (the second person of a two-person command) and ``lunabase health``
(ask a running ground how it is, for people and for monitoring)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

DEFAULT_API = os.environ.get("LUNABASE_API", "http://127.0.0.1:8700")

GROUND_EPILOG = """\
examples:
  lunabase ground --broker mqtt://127.0.0.1:1884 --inventory base.toml --archive sqlite:///base.db
  lunabase ground --broker mqtts://ground:PW@broker:8883 --inventory base.toml \\
                  --archive postgresql://lunabase@127.0.0.1/lunabase --api-port 8700
  lunabase ground ... --light-time 0            # loopback tests: no Earth-Moon delay

It runs ingest (broker -> archive), limits/alarms, node liveness, verified commanding and
the client interface (HTTP + WebSocket, docs/ground-api.md) in one process, and logs what
it connects to and every payload it rejects.  The ops database (alarms, events, command
audit, TC counters) defaults to <archive>-ops.db next to a SQLite archive.

Every client logs in: accounts live in --users (create the first admin with
`lunabase users add NAME --role admin`); the ground refuses to start without that file or
when group/other users can read it.  Hazardous commands need a second account's approval
(--two-person / --single-person change which commands).
"""

COMMAND_EPILOG = """\
examples:
  lunabase command n01 PING --wait
  lunabase command n01 SET_RATE sensor=SEISMIC period_ms=10
  lunabase command n01 SET_MODE mode=SAFE duration_s=0 --confirm --wait
  lunabase command n03 REPLAY apid=1 from_seq=100 count=50 --not-after 3600   # queue for 1 h

Arguments are NAME=VALUE (integers or enum names); hazardous commands need --confirm and,
under the two-person rule, wait AWAITING_APPROVAL until another commander runs
`lunabase approve ID` (or `lunabase deny ID`).  You log in with $LUNABASE_TOKEN,
$LUNABASE_USER + $LUNABASE_PASSWORD, ~/.config/lunabase/credentials (lunabase login), or
a password prompt.
The command goes through a running ground's API (--api, or $LUNABASE_API); a node that is
asleep gets it HELD until its announced contact, one out of contact QUEUED until it is back
(within --not-before/--not-after).  A follower ground (several grounds on one archive)
refuses it and names the leader.
Exit status: 0 executed (or queued/sent without --wait), 1 refused/rejected/failed/timed out.
"""


def register(sub: Any) -> None:
    g = sub.add_parser("ground", help="run the ground segment (ingest, alarms, commanding, client API)",
                       description="Run the lunabase ground segment.", epilog=GROUND_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://[user:pass@]host:port or mqtts://")
    g.add_argument("--inventory", required=True, help="base inventory TOML (nodes, keys, ground account)")
    g.add_argument("--archive", default="sqlite:///lunabase-archive.db", help="sqlite:///path.db or postgresql://...")
    g.add_argument("--ops-db", default=None, help="ops SQLite file (default: <archive>-ops.db)")
    g.add_argument("--api-host", default="127.0.0.1", help="client interface address (0.0.0.0 for every interface)")
    g.add_argument("--api-port", type=int, default=8700, help="0 = pick a free port (printed)")
    g.add_argument("--light-time", type=float, default=1.28,
                   help="one-way light time, s (default 1.28), until the ground has measured it")
    g.add_argument("--time-sync", type=float, default=600.0, metavar="S",
                   help="re-sync node clocks every S s (default 600; unsynced nodes at once; -1: never)")
    g.add_argument("--durable", action="store_true",
                   help="SQLite archive: fsync every commit (synchronous=FULL, survives power loss)")
    g.add_argument("--custody", type=float, default=1.0, metavar="S",
                   help="tell nodes every S s what the archive committed, so they let go of it "
                        "(docs/custody.md; default 1; 0: never)")
    g.add_argument("--custody-give-up", type=float, default=600.0, metavar="S",
                   help="a sequence hole stalling a node's custody this long is taken as dropped by the node "
                        "(default 600; about the span its journal holds)")
    g.add_argument("--gap-settle", type=float, default=10.0, metavar="S",
                   help="a sequence gap is reported after it stayed open S s (default 10; give every ingest "
                        "worker the same; docs/ground-ops.md, Automatic refill)")
    g.add_argument("--refill", type=int, default=30, metavar="N",
                   help="REPLAY the gaps nodes' journals still hold, at most N commands a minute "
                        "(default 30; 0: no automatic refill)")
    g.add_argument("--ack-timeout", type=float, default=5.0, help="s to ACCEPTED, plus the round trip")
    g.add_argument("--exec-timeout", type=float, default=15.0, help="s to EXECUTED, plus the round trip")
    g.add_argument("--grace", type=float, default=30.0, help="s past an announced contact before LOST")
    g.add_argument("--keep-days", type=float, default=90.0, help="ops database retention (events, closed alarms)")
    g.add_argument("--client-id", default="lunabase-ground", help="MQTT client id (the persistent session's name)")
    g.add_argument("--share", default=None, help="shared-subscription group ($share/GROUP/...) for several workers")
    g.add_argument("--leader-lock", choices=("auto", "on", "off"), default="auto",
                   help="several grounds on one archive: only the lock holder runs alarms, commanding and "
                        "time syncs; the others ingest and serve reads (auto: on for PostgreSQL; "
                        "docs/ground-ops.md, Several grounds)")
    g.add_argument("--ground-id", default=None, help="this ground's name for the others (default: the client id)")
    g.add_argument("--ca", default=None, help="with mqtts://: the CA certificate (PEM) that signed the broker's "
                   "(broker-config's tls/ca.crt; default: the system's CAs)")
    g.add_argument("--tls-cert", default=None, help="serve the client interface over HTTPS with this PEM certificate")
    g.add_argument("--tls-key", default=None, help="its private key (PEM), if not in --tls-cert")
    g.add_argument("--instance", default="", metavar="N",
                   help="which ground (2, 3, 4 with the default inventory): broker accounts ground-N and "
                        "ground-N-cmd instead of ground and ground-cmd (the broker ties client ids to accounts)")
    g.add_argument("--users", default=os.environ.get("LUNABASE_USERS", "lunabase-users.json"), metavar="FILE",
                   help="accounts file (lunabase users; default $LUNABASE_USERS or %(default)s)")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name clients use besides 127.0.0.1/localhost/::1 and the bind host (repeat)")
    g.add_argument("--allowed-origin", action="append", default=[], metavar="URL",
                   help="a web origin (scheme://host:port) allowed to send state changes and open the WebSocket")
    g.add_argument("--two-person", action="append", default=[], metavar="PATTERN",
                   help="commands (fnmatch) that need a second account's approval besides the hazardous ones")
    g.add_argument("--single-person", action="append", default=[], metavar="PATTERN",
                   help="hazardous commands exempted from the two-person rule (logged at start)")
    g.add_argument("--approval-timeout", type=float, default=600.0, metavar="S",
                   help="s a command may await approval before it EXPIRES (default 600)")
    g.set_defaults(func=run_ground)

    c = sub.add_parser("command", help="send a telecommand through a running ground",
                       description="Send a telecommand to a node through the ground's API.",
                       epilog=COMMAND_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("node")
    c.add_argument("name", metavar="COMMAND", help="dictionary command name (lunabase dict show)")
    c.add_argument("args", nargs="*", metavar="NAME=VALUE")
    c.add_argument("--confirm", action="store_true", help="required for hazardous commands")
    c.add_argument("--wait", action="store_true", help="follow the stages until a final one")
    c.add_argument("--timeout", type=float, default=60.0, help="with --wait, s to wait (default 60)")
    c.add_argument("--not-before", type=float, default=None, metavar="S", help="release no earlier than S s from now")
    c.add_argument("--not-after", type=float, default=None, metavar="S", help="expire if not released within S s")
    c.add_argument("--user", default=None, help="account to log in as (else from the credential)")
    c.add_argument("--api", default=DEFAULT_API, help=f"ground API URL (default {DEFAULT_API})")
    c.add_argument("--ca", default=None, help="for an https:// ground: the CA (PEM) its certificate must chain to")
    c.add_argument("--json", action="store_true", help="print the final command row as JSON")
    c.set_defaults(func=run_command)

    h = sub.add_parser("health", help="is a running ground well? (exit 0 ok, 1 not ok, 2 unreachable)",
                       description="Ask a running ground for its health: ingest, archive, broker, command "
                                   "queue, ops timers (docs/ground-ops.md, Health).",
                       epilog=HEALTH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("--api", default=DEFAULT_API, help=f"ground API URL (default {DEFAULT_API})")
    h.add_argument("--ca", default=None, help="for an https:// ground: the CA (PEM) its certificate must chain to")
    h.add_argument("--timeout", type=float, default=10.0, help="s to wait for the answer (default 10)")
    h.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    h.set_defaults(func=run_health)

    for verb in ("approve", "deny"):
        v = sub.add_parser(verb, help=f"{verb} another account's command awaiting approval (two-person rule)",
                           description=f"{verb.capitalize()} a command that waits AWAITING_APPROVAL. "
                           "Nobody approves or denies their own command.")
        v.add_argument("id", type=int, help="command id (lunabase command prints it; the console shows it)")
        if verb == "deny":
            v.add_argument("--reason", default="", help="recorded in the command's history")
        v.add_argument("--user", default=None, help="account to log in as")
        v.add_argument("--api", default=DEFAULT_API, help=f"ground API URL (default {DEFAULT_API})")
        v.add_argument("--ca", default=None, help="for an https:// ground: the CA (PEM) its certificate must chain to")
        v.set_defaults(func=run_approve, verb=verb)


HEALTH_EPILOG = """\
examples:
  lunabase health                       # one line per part, reasons when not ok
  lunabase health --api http://base:8700 --json
  lunabase health || page-the-operator  # monitoring: the exit status says it

Exit status: 0 every part ok, 1 some part is not (the reasons are printed), 2 the ground
did not answer (not running, wrong --api, or too slow: --timeout).
"""


def run_ground(a: argparse.Namespace) -> int:
    from ground.auth import AccountStore, AuthError, TwoPersonPolicy
    from ground.service import GroundService

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    policy = TwoPersonPolicy(require=a.two_person, exempt=a.single_person, timeout=a.approval_timeout)
    if a.single_person:
        logging.getLogger("ground.service").warning("two-person rule lifted for %s", ", ".join(a.single_person))
    from wire.inventory import Inventory

    inventory = Inventory.load(a.inventory)
    try:
        users = AccountStore.open(a.users)  # a secrets problem is named before anything starts
        svc = GroundService(a.broker, inventory, a.archive, ops_db=a.ops_db, api_host=a.api_host,
                            api_port=a.api_port, light_time=a.light_time, ack_timeout=a.ack_timeout,
                            exec_timeout=a.exec_timeout, grace=a.grace, keep_days=a.keep_days, client_id=a.client_id,
                            share=a.share, instance=a.instance, ca=a.ca, tls_cert=a.tls_cert, tls_key=a.tls_key,
                            users=users, allowed_hosts=a.allowed_host,
                            allowed_origins=a.allowed_origin, two_person=policy,
                            time_sync_s=a.time_sync, durable=a.durable, custody_s=a.custody,
                            custody_give_up_s=a.custody_give_up, gap_settle_s=a.gap_settle,
                            refill_per_minute=a.refill,
                            leader_lock={"auto": None, "on": True, "off": False}[a.leader_lock],
                            ground_id=a.ground_id)
    except (AuthError, FileNotFoundError) as e:
        print(f"lunabase ground: {e}", file=sys.stderr)
        return 1

    async def main() -> None:
        await svc.start()
        assert svc.api is not None
        print(f"lunabase ground: site {svc.inventory.site}, API {svc.api.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await svc.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def parse_args(items: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs: integers stay integers, anything else is an enum name."""
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"argument {it!r}: write NAME=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k] = int(v, 0)
        except ValueError:
            out[k] = v
    return out


def run_command(a: argparse.Namespace) -> int:
    import time

    from ground.auth.credentials import load_credentials
    from ground.client import ApiError, GroundClient

    try:
        args = parse_args(a.args)
    except ValueError as e:
        print(f"lunabase command: {e}", file=sys.stderr)
        return 2
    now = time.time()

    async def main() -> int:
        async with GroundClient(a.api, credentials=load_credentials(a.api, user=a.user, prompt=True),
                                ca=a.ca) as g:
            row = await g.send_command(a.node, a.name, args, confirm=a.confirm,
                                       not_before=now + a.not_before if a.not_before is not None else None,
                                       not_after=now + a.not_after if a.not_after is not None else None)
            print(f"#{row['id']} {a.node} {row['command']}: {row['stage']} (as {g.user})", flush=True)
            if row["stage"] == "AWAITING_APPROVAL":
                print(f"#{row['id']}: another commander approves it with: lunabase approve {row['id']}", flush=True)
            if a.wait:
                deadline = time.monotonic() + a.timeout
                seen = len(row["history"])
                while row["stage"] not in ("EXECUTED", "REJECTED", "FAILED", "TIMED_OUT", "EXPIRED", "CANCELLED"):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        print(f"#{row['id']}: still {row['stage']} after {a.timeout:g} s", file=sys.stderr)
                        return 1
                    row = await g.command(row["id"], wait=min(left, 2.0))
                    for st, _t, why in row["history"][seen:]:
                        print(f"#{row['id']} {st}" + (f": {why}" if why else ""), flush=True)
                    seen = len(row["history"])
            if a.json:
                print(json.dumps(row, indent=2))
            return 0 if row["stage"] in ("EXECUTED", "AWAITING_APPROVAL", "QUEUED", "HELD", "SENT", "ACCEPTED") else 1

    try:
        return asyncio.run(main())
    except ApiError as e:
        # status 0: the ground could not be reached (no HTTP status to show)
        print(f"lunabase command: {e.message}" + (f" (HTTP {e.status})" if e.status else ""), file=sys.stderr)
        return 1


def format_health(h: dict[str, Any]) -> str:
    """The health answer in a few lines: the verdict, each part with its key figures, the reasons."""
    lines = [f"{'ok' if h.get('ok') else 'NOT OK'}: site {h.get('site', '?')}"]
    for name, p in (h.get("parts") or {}).items():
        figures = {k: v for k, v in p.items() if k not in ("ok", "reason", "last_commit", "last_tick", "last_batch")
                   and not isinstance(v, (dict, list)) and v is not None}
        shown = ", ".join(f"{k}={_short(v)}" for k, v in list(figures.items())[:9])
        lines.append(f"  {name:<9} {'ok ' if p.get('ok') else 'BAD'}  {shown}")
    for r in h.get("reasons") or []:
        lines.append(f"  reason: {r}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s if len(s) <= 40 else s[:37] + "..."


def run_health(a: argparse.Namespace) -> int:
    from ground.auth import AuthError
    from ground.auth.credentials import load_credentials
    from ground.client import ApiError, GroundClient, GroundError, GroundUnavailable

    async def main() -> dict[str, Any]:
        async with GroundClient(a.api, timeout=a.timeout, credentials=load_credentials(a.api), ca=a.ca) as g:
            return await g.health()

    try:
        h = asyncio.run(main())
    except AuthError:
        raise  # a local credentials problem, not the ground's answer
    except ApiError as e:
        if not isinstance(e, GroundUnavailable) and e.status in (401, 403, 429):
            print(f"lunabase health: {a.api} refused: {e.message} (a viewer account's token: LUNABASE_TOKEN)",
                  file=sys.stderr)
            return 2
        print(f"lunabase health: {a.api} did not answer: {e.message}", file=sys.stderr)
        return 2
    except (GroundError, TimeoutError, OSError) as e:
        print(f"lunabase health: {a.api} did not answer: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 2
    print(json.dumps(h, indent=2) if a.json else format_health(h), flush=True)
    return 0 if h.get("ok") else 1


def run_approve(a: argparse.Namespace) -> int:
    from ground.auth.credentials import load_credentials
    from ground.client import ApiError, GroundClient

    async def main() -> int:
        async with GroundClient(a.api, credentials=load_credentials(a.api, user=a.user, prompt=True), ca=a.ca) as g:
            if a.verb == "approve":
                row = await g.approve_command(a.id)
            else:
                row = await g.deny_command(a.id, a.reason)
            print(f"#{row['id']} {row['node']} {row['command']} (sent by {row['user']}): {row['stage']}, "
                  f"{a.verb} by {g.user}", flush=True)
            return 0

    try:
        return asyncio.run(main())
    except ApiError as e:
        print(f"lunabase {a.verb}: {e.message}" + (f" (HTTP {e.status})" if e.status else ""), file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m ground.cli_ops ground|command ...``: the same commands without the other parts' CLI."""
    ap = argparse.ArgumentParser(prog="lunabase")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    register(ap.add_subparsers(dest="command", metavar="COMMAND", required=True))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(a.verbose + 1, 2),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return int(a.func(a) or 0)


if __name__ == "__main__":
    sys.exit(main())

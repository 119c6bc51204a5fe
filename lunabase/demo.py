"""`lunabase demo`: a simulated lunar base, the ground segment and the console on this machine.

What runs (all on 127.0.0.1, ports picked free unless given):

    mosquitto (private, per-node passwords + ACLs from a fresh base inventory)
      ▲  Earth–Moon link proxies (1.28 s light time)  ◀── virtual nodes: the real firmware
      │                                                   on MicroPython VMs, sensors from
      ▼                                                   the lunar environment model
    ground (ingest → SQLite archive → alarms, liveness, commanding → HTTP/WebSocket API)
      ▲
    console (Textual), a separate process so the UI never slows ingest

On a terminal the console opens in the foreground and quitting it (q) stops everything;
without one (or with --no-console) a summary line per node is printed every few seconds.

The ground has accounts like a real one: flight and capcom (commanders: one sends a
hazardous command, the other approves it), ops (operator), guest (viewer) and admin, with
random passwords kept in <workdir>/demo-passwords (0600) and printed at start.  The
console logs in as flight.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lunabase import ROOT

log = logging.getLogger("lunabase.demo")

EPILOG = """\
examples:
  lunabase demo                          the demo base with the console (q quits, stops everything)
  lunabase demo --no-console --duration 60
                                         headless: print node summaries for a minute, then a report
  lunabase demo --scenario lunar-night   another scenario (see `lunabase sim list`)
  lunabase demo --api-port 8700          then `lunabase console` from another terminal

files (kept between runs; --fresh starts over): .lunabase/demo/ — base.toml (inventory,
secrets), broker/ (mosquitto config, passwords, ACLs, log), archive.db, nodes/, demo.log,
users.json (ground accounts, 0600), demo-passwords (their passwords, 0600)
"""

#: the demo nodes' journal.custody_s: the demo's ground acknowledges custody every second
#: (GroundService default), so a packet is confirmed about light time + 1 s + light time after it
#: is sent (≈ 4 s at 1.28 s); 10 s without progress before a node re-sends leaves room for a
#: busy machine without re-sending what is merely in flight (docs/custody.md)
DEMO_CUSTODY_S = 10

DEMO_ACCOUNTS = (("flight", "commander"), ("capcom", "commander"), ("ops", "operator"), ("guest", "viewer"),
                 ("admin", "admin"))


def demo_accounts(work: Path) -> dict[str, tuple[str, str]]:
    """The demo ground's accounts (name -> (role, password)), made on the first run.

    The passwords sit in ``demo-passwords`` (0600) so a demo can print them; a real ground
    keeps only the hashes (lunabase users add).
    """
    import json
    import secrets

    from ground.auth import AccountStore
    from ground.auth.accounts import check_private, write_private

    pw_path = work / "demo-passwords"
    store = AccountStore.open(work / "users.json", create=True)
    known: dict[str, list[str]] = {}
    if pw_path.exists():
        check_private(pw_path)
        known = json.loads(pw_path.read_text())
    out = {}
    for name, role in DEMO_ACCOUNTS:
        if name not in known or name not in store.users:
            pw = secrets.token_urlsafe(9)
            if name in store.users:
                store.set_password(name, pw, by="lunabase-demo")
            else:
                store.add(name, pw, [role], by="lunabase-demo")
            known[name] = [role, pw]
        out[name] = (known[name][0], known[name][1])
    write_private(pw_path, json.dumps(known, indent=1) + "\n")
    return out


def login_help(url: str, accounts: dict[str, tuple[str, str]]) -> str:
    lines = ["accounts (passwords also in demo-passwords, 0600):"]
    for name, (role, pw) in accounts.items():
        lines.append(f"  {name:8} {role:10} password {pw}")
    f_pw, c_pw = accounts["flight"][1], accounts["capcom"][1]
    lines += [f"log in   LUNABASE_USER=flight LUNABASE_PASSWORD={f_pw} lunabase console --ground {url}",
              f"         LUNABASE_USER=flight LUNABASE_PASSWORD={f_pw} lunabase command n01 PING --wait --api {url}",
              f"approve  hazardous commands wait for a second commander: LUNABASE_USER=capcom "
              f"LUNABASE_PASSWORD={c_pw} lunabase approve ID --api {url}"]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a simulated lunar base with the ground segment and the console",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", default="demo", help="scenario name or .toml path (default: %(default)s)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0 = until quit)")
    p.add_argument("--no-console", action="store_true", help="print summaries instead of opening the console")
    p.add_argument("--api-port", type=int, default=0, help="ground client interface port (default: a free one)")
    p.add_argument("--light-time", type=float, default=None, metavar="S",
                   help="one-way light time override (default: the scenario's, 1.28 s for the demo)")
    p.add_argument("--workdir", default=str(ROOT / ".lunabase" / "demo"), help="where state is kept (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="delete the work dir first (new keys, empty archive)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process of the console mode
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    use_console = not args.no_console and not args.serve and sys.stdout.isatty() and sys.stdin.isatty()
    if not use_console:
        try:
            return asyncio.run(serve(args, work, print_summaries=not args.serve))
        except KeyboardInterrupt:
            return 130
    return _with_console(args, work)


# -- console mode: ground + sim in a child, console in the foreground -------------------------


def _with_console(args: argparse.Namespace, work: Path) -> int:
    from sim.mosquitto import free_port

    port = args.api_port or free_port()
    ready = work / "ready"
    ready.unlink(missing_ok=True)
    logf = open(work / "demo.log", "ab")
    cmd = [sys.executable, "-m", "lunabase.cli", "-v", "demo", "--serve", "--no-console", "--api-port", str(port),
           "--workdir", str(work), "--scenario", args.scenario, "--duration", str(args.duration)]
    if args.light_time is not None:
        cmd += ["--light-time", str(args.light_time)]
    print(f"starting the simulated base and the ground (log: {work / 'demo.log'}) ...", flush=True)
    child = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if child.poll() is not None:
                print(f"the demo base stopped during start-up (exit {child.returncode}); last lines of "
                      f"{work / 'demo.log'}:\n{_tail(work / 'demo.log')}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"the demo base did not come up within 120 s; see {work / 'demo.log'}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        from ground.auth.credentials import Credentials
        from ground.console.cli import run_console

        url = f"http://127.0.0.1:{port}"
        accounts = demo_accounts(work)
        print(f"web console: open {url}/ in a browser (NASA Open MCT, served by the ground)", flush=True)
        print(login_help(url, accounts), flush=True)
        return run_console(url, credentials=Credentials("flight", accounts["flight"][1], None, "demo"))
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        logf.close()
        print(f"demo stopped; state kept in {work} (log: {work / 'demo.log'})")


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# -- the base itself ---------------------------------------------------------------------------


async def serve(args: argparse.Namespace, work: Path, print_summaries: bool) -> int:
    """Broker + ground + simulated base until the duration ends or SIGINT/SIGTERM."""
    from ground.broker import acl_text, make_self_signed, security_config, write_password_file
    from ground.service import GroundService
    from sim.mosquitto import Mosquitto, free_port
    from sim.runner import Scenario, format_report
    from wire.inventory import Inventory

    scenario = Scenario.load(args.scenario)
    if args.light_time is not None:
        scenario.link_delay_s = args.light_time
    inv_path = work / "base.toml"
    ids = [n.id for n in scenario.nodes]
    inv = Inventory.load(inv_path) if inv_path.exists() else None
    if inv is None or inv.site != scenario.site_id or {n.id for n in inv.nodes} != set(ids):
        inv = Inventory.generate(scenario.site_id, ids)
        inv.save(inv_path)
        log.info("new base inventory %s: site %s, nodes %s", inv_path, inv.site, ", ".join(ids))

    bdir = work / "broker"
    bdir.mkdir(exist_ok=True)
    pw = write_password_file(inv, bdir / "passwd")
    acl = bdir / "acl"
    acl.write_text(acl_text(inv))
    # TLS only: the site CA (kept in broker/tls across runs) signs the broker's certificate;
    # every node, the ground and the simulator's observer verify it
    tls = await asyncio.to_thread(make_self_signed, bdir / "tls")
    broker = Mosquitto(workdir=bdir, extra_config=security_config(pw, acl), allow_anonymous=False, tls=tls)
    await asyncio.to_thread(broker.start)
    say = print if print_summaries else log.info
    say(f"broker   mosquitto on mqtts://127.0.0.1:{broker.port}, TLS only, certificate verified against "
        f"{tls.cafile} (per-node accounts, client ids tied to accounts, ACLs; log {broker.log_path})")

    api_port = args.api_port or free_port()
    accounts = demo_accounts(work)
    from ground.auth import AccountStore

    ground = GroundService(broker.url, inv, archive=f"sqlite:///{work / 'archive.db'}",
                           api_port=api_port, light_time=scenario.link_delay_s, ca=tls.cafile,
                           users=AccountStore.open(work / "users.json"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = None
    try:
        await ground.start()
        await ground.wait_connected(30)
        say(f"ground   archive {work / 'archive.db'}; client interface http://127.0.0.1:{api_port}")
        if print_summaries:
            say(login_help(f"http://127.0.0.1:{api_port}", accounts))
        sim = demo_base(scenario, ground, broker.url, work / "sim", inv, ca=tls.cafile,
                        progress=(print if print_summaries else log.info))
        await sim.start()
        say(f"base     {len(ids)} virtual nodes ({', '.join(ids)}) at site {inv.site}, light time "
            f"{scenario.link_delay_s:g} s, environment ×{scenario.acceleration:g}")
        if not print_summaries:
            (work / "ready").write_text(f"http://127.0.0.1:{api_port}\n")
        else:
            say(f"console  run `lunabase console --ground http://127.0.0.1:{api_port}` in another terminal")
            say(f"web      open http://127.0.0.1:{api_port}/ in a browser (the web console, NASA Open MCT)")
        t_end = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            timeout = 5.0 if t_end is None else max(0.0, min(5.0, t_end - time.monotonic()))
            try:
                await asyncio.wait_for(stop.wait(), timeout)
            except TimeoutError:
                pass
            if print_summaries:
                _print_nodes(ground)
            if t_end is not None and time.monotonic() >= t_end:
                break
        if print_summaries:
            print(format_report(await _archived_report(sim, ground)))
            _print_ground(ground)
        return 0
    finally:
        if sim is not None:
            await sim.stop()
        await ground.stop()
        await asyncio.to_thread(broker.stop)
        (work / "ready").unlink(missing_ok=True)


def demo_base(scenario: Any, ground: Any, broker_url: str, workdir: Path, inventory: Any,
              ca: str | Path | None = None, progress: Any = None) -> Any:
    """The demo's simulated base (a ``sim.runner.SimBase``, not started) on a started ``ground``'s broker.

    When the ground sends custody acknowledgements (``GroundService`` default) the nodes run
    in custody mode (``journal.custody_s`` = DEMO_CUSTODY_S): they keep every packet until the
    archive has it (docs/custody.md), what a base with a lunabase ground gets."""
    from sim.runner import SimBase

    return SimBase(scenario, broker_url=broker_url, workdir=workdir, inventory=inventory, ca=ca, progress=progress,
                   custody_s=DEMO_CUSTODY_S if ground.custody is not None else 0)


async def _archived_report(sim: Any, ground: Any, settle_s: float = 3.0) -> dict[str, dict[str, Any]]:
    """The simulator's report plus, per node, how many of the packets it saw on the broker
    the ground's archive holds: delivery is counted at the archive, so packets lost between
    the broker and the archive (a displaced ground session, a dead ingest) show."""
    await asyncio.sleep(settle_s)  # what is in flight lands
    rep = sim.report()
    for nid, r in rep.items():
        seen = sim.accounting.keys(nid) if sim.accounting else set()
        have = await asyncio.to_thread(ground.archive.packet_keys, nid, ground.inventory.site)
        r["archived"] = len(seen & have)
    return rep


def _print_nodes(ground: Any) -> None:
    ops = ground.ops
    if ops is None:
        return
    rows = ops.nodes_view()
    alarms = ops.alarms.active()
    line = []
    for n in rows:
        soc = n.get("soc")
        line.append(f"{n.get('node')}:{n.get('state')}/{n.get('mode') or '-'}"
                    + (f" soc {soc:.0f}%" if isinstance(soc, (int, float)) else ""))
    h = ops.health()
    ground_state = "ground ok" if h["ok"] else "GROUND NOT OK: " + "; ".join(h["reasons"])
    cu = (h.get("parts") or {}).get("custody")
    custody = (f" | custody: {cu.get('confirmed', 0)} confirmed in {cu.get('sent', 0)} acks" if cu else
               " | custody: off")
    print(f"[ground] {'  '.join(line) or 'no nodes yet'}  | active alarms: {len(alarms)}{custody} | {ground_state}",
          flush=True)


def _print_ground(ground: Any) -> None:
    from ground.cli_ops import format_health

    if ground.ops is None:
        return
    # what the ground says of itself (the same answer as /api/health and `lunabase health`)
    for ln in format_health(ground.ops.health()).splitlines():
        print(f"[ground] health {ln.strip()}")
    _print_custody(ground)
    for node, link in sorted(ground.ops.links().items()):
        errors = link.get("errors") or {}
        print(f"[ground] link {node}: {link.get('packets', '?')} packets, gaps {link.get('gaps', 0)}, "
              f"duplicates {link.get('duplicates', 0)}, rejected {sum(errors.values()) if errors else 0} "
              f"{errors if errors else ''}")


def _print_custody(ground: Any) -> None:
    """Per node what custody did: the ground's side (acknowledgements, the committed-through
    point per APID, holes, skipped counts) and the node's own (its latest status: packets it
    let go on the ground's word this boot, re-sends, rejected acknowledgements)."""
    if ground.custody is None:
        print("[ground] custody off: the nodes' PUBACK ends custody (docs/custody.md)")
        return
    for node, v in ground.custody.view().items():
        sts = [st for st in ground.archive.status_history(node=node, site=ground.inventory.site)
               if isinstance(st.get("custody"), list) and len(st["custody"]) >= 3]
        own = "; node: no status yet"
        if sts:  # a node sends its status at connect (and going to sleep): its figures are from then
            st = sts[-1]
            age = time.time() - float(st.get("received") or time.time())
            own = (f"; node's last status ({st.get('state')}, {age:.0f} s ago): confirmed {st['custody'][0]}, "
                   f"re-sends {st['custody'][1]}, rejected acks {st['custody'][2]}")
        through = " ".join(f"{a}:{t}" for a, t in v["through"].items())
        print(f"[ground] custody {node}: {v['confirmed']} confirmed in {v['sent']} acks (failed {v['failed']}), "
              f"through {through or '-'}, holes {sum(v['holes'].values())}, skipped {v['skipped']}{own}")

"""`lunabase sim ...`: run and list scenarios (registered into lunabase.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="lunar simulator: run a scenario of virtual nodes (real MicroPython VMs)",
        description="The lunar simulator: virtual nodes (the real firmware on the MicroPython unix "
        "port) under a modelled lunar environment, behind an Earth-Moon link emulator.",
    )
    s = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    r = s.add_parser(
        "run",
        help="run a scenario (a shipped name or a TOML path)",
        description="Start a private mosquitto (unless --broker), the sensor bus, one link proxy per node "
        "and the nodes; print progress; end with a report per node.",
        epilog="examples:\n  lunabase sim run demo --duration 60\n  lunabase sim run lunar-night\n"
        "  lunabase sim run my.toml --broker mqtt://127.0.0.1:18830 --ground-inventory base.toml --custody 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("scenario", help="scenario name (see `lunabase sim list`) or path to a .toml")
    r.add_argument("--broker", help="use this broker (mqtt://host:port, or mqtts:// with --ca) instead of a private mosquitto")
    r.add_argument("--ca", help="with an mqtts:// broker: the CA (PEM) that signed its certificate; every node and "
                   "the observer verify the broker with it")
    r.add_argument(
        "--ground-inventory",
        metavar="PATH",
        help="base inventory (keys, passwords) to use; written there (mode 0600) if missing, so the ground can use it",
    )
    r.add_argument("--custody", type=float, default=0.0, metavar="S",
                   help="nodes in custody mode (journal.custody_s = S, docs/custody.md): set it when `lunabase ground` "
                   "(custody acknowledgements on by default) ingests from --broker; default 0 = off (no ground)")
    r.add_argument("--duration", type=float, help="real seconds to run (0 = until Ctrl-C); default: the scenario's")
    r.add_argument("--workdir", help="keep node data dirs, logs and the broker here (default: a temporary dir)")
    r.add_argument("--json", action="store_true", help="print the final report as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=_run)
    ls = s.add_parser("list", help="list the shipped scenarios")
    ls.set_defaults(func=_list)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _list(args: argparse.Namespace) -> int:
    from sim.runner import Scenario, list_scenarios

    for name in list_scenarios():
        sc = Scenario.load(name)
        dur = "until stopped" if not sc.duration_s else f"{sc.duration_s:g} s"
        print(f"{name:<16} {len(sc.nodes):>3} node(s)  {sc.site.name:<11} ×{sc.acceleration:<7g} {dur:<14} {sc.description}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from sim.runner import Scenario, ScenarioError, SimBase, format_report

    try:
        sc = Scenario.load(args.scenario)
    except ScenarioError as e:
        print(f"lunabase sim: {e}", file=sys.stderr)
        return 2
    if args.broker and args.broker.startswith("mqtts:") and not args.ca:
        print(f"lunabase sim: --broker {args.broker.split('@')[-1]}: mqtts needs --ca (the CA that signed the "
              "broker's certificate)", file=sys.stderr)
        return 2
    if args.custody < 0 or (args.custody > 0 and not args.broker):
        print("lunabase sim: --custody needs S >= 0 and --broker (a private broker has no ground to confirm "
              "custody: its nodes would keep and re-send everything)", file=sys.stderr)
        return 2
    progress = None if args.quiet else (lambda line: print(line, flush=True))

    async def main() -> dict[str, dict[str, Any]]:
        base = SimBase(sc, broker_url=args.broker, workdir=args.workdir, inventory_path=args.ground_inventory,
                       progress=progress, ca=args.ca, custody_s=args.custody)
        try:
            async with base:
                try:
                    await base.run(args.duration)
                except asyncio.CancelledError:
                    pass
                await asyncio.sleep(min(3.0, 2 * sc.link_delay_s + 0.5))
                return base.report()
        finally:
            base.cleanup()

    try:
        rep = asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        from sim.runner import format_report

        print(format_report(rep))
    return 0

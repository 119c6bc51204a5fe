"""The `lunabase` command: one entry point, subcommands contributed by each part.

Each provider module below defines ``register(subparsers)`` and keeps its top-level
imports light (heavy imports go inside the handler), so `lunabase --help` stays fast.
They are imported as modules, not by name: a missing or broken part fails loudly here
instead of silently dropping its subcommands.
A handler is stored as ``func`` on its parser and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys

import ground.cli
import ground.console.cli
import hil.cli
import lunabase.bench
import lunabase.demo
import sim.cli
import wire.cli

PROVIDERS = (
    lunabase.demo,  # demo
    ground.cli,  # ground, console, command, broker-config, replay, export
    ground.console.cli,  # console
    sim.cli,  # sim run / list, environment
    hil.cli,  # board, flash, gateway
    lunabase.bench,  # bench parse / ingest / sim
    wire.cli,  # dict show / codegen
)

EPILOG = """\
first steps:
  lunabase demo                 simulated lunar base + ground + console, all on this machine
  lunabase sim list             the shipped scenarios
  lunabase bench parse          how fast the parser is here, next to a naive baseline
  lunabase dict show            the telemetry dictionary (packets, fields, limits, commands)

every subcommand has its own --help with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="lunabase",
        description="Telemetry stack for lunar surface stations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for mod in PROVIDERS:
        mod.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    func = getattr(args, "func", None)
    if func is None:
        ap.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # the parts' own errors carry the facts (path, URL, what was expected): show them
        # without a traceback unless -v asked for one
        if not isinstance(e, _user_errors()) or args.verbose:
            raise
        print(f"lunabase {args.command}: {e}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """The error roots a wrong path, URL, inventory or board raises (ground/errors.py, hil/rawrepl.py)."""
    from ground.errors import GroundError
    from hil.rawrepl import BoardError
    from sim.mosquitto import MosquittoError
    from wire.dictionary import DictionaryError
    from wire.inventory import InventoryError

    return (GroundError, BoardError, MosquittoError, DictionaryError, InventoryError)


if __name__ == "__main__":
    sys.exit(main())

"""`lunabase bench`: how fast the pieces are on this machine, next to naive baselines.

Each sub-benchmark is a module here with ``register(bench_subparsers)`` that adds its own
subcommand (``parse``, ``ingest``, ``sim``, ``console``); a module that is not in this checkout is
skipped.  Top-level imports stay light: the work is imported inside each handler.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = ("parse", "ingest", "sim", "console")


def register(subparsers) -> None:  # type: ignore[no-untyped-def]
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: parser, ingest, simulator, web console",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name in SUBCOMMANDS:
        modname = f"{__name__}.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # that benchmark is not in this checkout
            raise
        mod.register(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

"""`python -m hil board|flash|gateway`: the hil subcommands without the rest of `lunabase`."""

from __future__ import annotations

import argparse
import logging
import sys

from hil.cli import register


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil", description="lunabase board tooling")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    register(ap.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

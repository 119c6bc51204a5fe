"""`lunabase demo`: the whole base on this machine (grows as the parts land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a simulated lunar base with the ground segment and the console",
        description="Starts a private mosquitto on a free loopback port, the ground segment, "
        "the demo scenario's virtual nodes (real MicroPython VMs) and the operator console.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("lunabase demo: the simulator and ground segment are not built yet in this checkout")
    return 1

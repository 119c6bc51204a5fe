"""`lunabase board | flash | gateway`: board tooling subcommands (imports stay inside handlers)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the hil subcommands to the `lunabase` parser."""
    p = sub.add_parser(
        "board",
        help="a virtual MicroPython board on a pseudo-terminal (mpremote/pyserial can open it)",
        description="Open a pty that behaves like a MicroPython board on a serial port, backed by the "
        "MicroPython unix port: banner, friendly and raw REPL, raw-paste, a filesystem (DIR), soft reset "
        "running boot.py and main.py.  Prints the port (e.g. /dev/pts/5).",
        epilog="example:\n  lunabase board --dir /tmp/board &\n  mpremote connect /dev/pts/5 ls",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", default="board-fs", help="directory holding the board's filesystem (default: ./board-fs)")
    p.add_argument("--heapsize", default="1M", help="MicroPython heap, e.g. 256K for an ESP32-sized heap")
    p.set_defaults(func=_board)

    p = sub.add_parser(
        "flash",
        help="compile the node firmware, upload what changed, reset, wait for the node's birth",
        description="Compile firmware/ (and the wire files it imports) with mpy-cross for the board's own "
        ".mpy version and arch, write the node's config.json from the inventory, upload only files whose "
        "sha256 differs (atomically: .tmp + verify + rename), soft reset, and wait until the node's retained "
        "status 'online' reaches the broker.",
        epilog="example:\n  lunabase flash --port /dev/ttyUSB0 --node n01 --inventory base.toml "
        "--broker mqtt://192.168.1.10:1883 --wifi-ssid lab --wifi-password secret",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", required=True, help="serial port: /dev/ttyUSB0, /dev/ttyACM0, a pty, socket://host:port")
    p.add_argument("--node", required=True, help="node id from the inventory")
    p.add_argument("--inventory", default="base.toml", help="base inventory TOML (keys, passwords)")
    p.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port the node connects to")
    p.add_argument("--ca", default=None, help="with mqtts://: the site CA certificate (PEM, broker-config's "
                   "tls/ca.crt); uploaded as ca.der, the node verifies the broker's certificate with it")
    p.add_argument("--wifi-ssid", default="", help="WiFi network (esp32/rp2 boards)")
    p.add_argument("--wifi-password", default="")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the node's birth message")
    p.add_argument("--birth-timeout", type=float, default=60.0, help="seconds to wait for the birth (default 60)")
    p.add_argument("--force", action="store_true", help="upload every file even when its sha256 matches")
    p.add_argument("--no-compile", action="store_true", help="upload .py sources instead of .mpy")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="extra config.json entry (repeatable)")
    p.add_argument("--custody", type=int, default=10, metavar="S",
                   help="journal.custody_s: keep every packet until the lunabase ground confirms the archive has it, "
                   "re-send after S s without progress (docs/custody.md; default %(default)s); 0 = off, for a "
                   "receiver that sends no custody acknowledgements (lunabase ground --custody 0 or --share)")
    p.set_defaults(func=_flash)

    p = sub.add_parser(
        "gateway",
        help="bridge a node's UART (COBS frames) to MQTT and commands back",
        description="Read COBS-framed packets from a node's serial port and publish them on the node's tm "
        "topic; forward TC packets from its cmd topic as COBS frames.  Every rejected frame is counted by reason.  "
        "The node's status frames are published retained on its status topic; when the node falls silent, the port "
        "is lost or the gateway dies (MQTT will), the gateway publishes it offline.",
        epilog="example:\n  lunabase gateway --port /dev/ttyUSB1 --node n07 --broker mqtt://127.0.0.1:1883 --site shackleton",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", required=True, help="serial port of the node's UART")
    p.add_argument("--node", required=True, help="node id: its tm/cmd topics (and broker account with --inventory)")
    p.add_argument("--site", default="", help="site id (default: from --inventory, else 'lunabase')")
    p.add_argument("--inventory", default="",
                   help="base inventory TOML: the site and, when --broker names no user, the node's broker account")
    p.add_argument("--broker", required=True, help="mqtt://[user:password@]host:port or mqtts://... (with --ca)")
    p.add_argument("--ca", default=None, help="with mqtts://: the CA certificate (PEM) the broker's must be signed by")
    p.add_argument("--baud", type=int, default=115200, help="UART speed (default 115200)")
    p.add_argument("--offline-after", type=float, default=30.0, metavar="S",
                   help="publish the node offline after S seconds without a good frame (default 30; "
                   "the node sends its status every uart.status_s = 10 s)")
    p.set_defaults(func=_gateway)


def _board(args: argparse.Namespace) -> int:
    from hil.virtual_board import main_board

    return main_board(args.dir, heapsize=args.heapsize)


def _flash(args: argparse.Namespace) -> int:
    from hil.flash import FlashError, main_flash

    try:
        return main_flash(args)
    except FlashError as e:
        print(f"flash failed: {e}", file=sys.stderr)
        return 1


def _gateway(args: argparse.Namespace) -> int:
    from hil.gateway import main_gateway

    return main_gateway(args)

"""`lunabase dict ...`: look at the telemetry dictionary, regenerate the firmware defs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dict",
        help="show the telemetry dictionary or regenerate wire/defs.py",
        description="The telemetry dictionary (wire/dictionary.toml) is the single source of truth "
        "for packets, fields, calibrations, limits and telecommands.",
    )
    s = p.add_subparsers(dest="dict_cmd", metavar="ACTION", required=True)
    show = s.add_parser("show", help="print packets, fields, limits and commands")
    show.add_argument("name", nargs="?", help="only this packet or command (e.g. HK, SET_RATE)")
    show.set_defaults(func=_show)
    gen = s.add_parser("codegen", help="regenerate wire/defs.py for the firmware (--check: verify only)")
    gen.add_argument("--check", action="store_true",
                     help="exit 1 if wire/defs.py differs from the dictionary, write nothing")
    gen.set_defaults(func=lambda a: __import__("wire.codegen", fromlist=["main"]).main(["--check"] if a.check else []))


def _show(args: argparse.Namespace) -> int:
    from wire.dictionary import load

    d = load()
    names = [p.name for p in d.packets] + [c.name for c in d.commands]
    if args.name and args.name.upper() not in names:
        raise SystemExit(f"lunabase dict show: no packet or command {args.name!r}; known: {', '.join(names)}")
    for p in d.packets:
        if args.name and args.name.upper() != p.name:
            continue
        print(f"APID {p.apid:#05x} {p.name}  ({p.length} bytes)  {p.description}")
        for f in p.fields:
            lim = ""
            if f.yellow or f.red:
                lim = f"  yellow {list(f.yellow) if f.yellow else '-'} red {list(f.red) if f.red else '-'}"
            cal = f"  x{f.scale:g}" if f.scale != 1 else ""
            print(f"   @{f.offset:<4} {f.name:<18} {f.type:<9} {f.unit:<7}{cal}{lim}")
        if p.samples:
            s = p.samples
            print(f"   @{s.offset:<4} samples {s.count} x {'/'.join(s.axes)} {s.type} {s.unit} x{s.scale:g}")
    for c in d.commands:
        if args.name and args.name.upper() != c.name:
            continue
        haz = "  HAZARDOUS" if c.hazardous else ""
        argtxt = ", ".join(f"{a.name}:{a.type}" for a in c.args) or "no arguments"
        print(f"TC opcode {c.opcode} {c.name}({argtxt}){haz}  {c.description}")
    return 0

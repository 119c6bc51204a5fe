"""Parser fixtures: every parse test runs on both twins (msgpack-style)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vectors"))

import ground.parse as gp


def _twins():
    out = [pytest.param((gp.PyParser, gp.PyStreamParser), id="python")]
    out.append(pytest.param((gp.CParser, gp.CStreamParser), id="cython"))
    return out


@pytest.fixture(params=_twins())
def twin(request):
    """(Parser, StreamParser) of one implementation."""
    if request.param[0] is None:
        pytest.fail(f"the Cython parser is not built ({gp.CYTHON_ERROR}): run setup.py build_ext --inplace")
    return request.param


@pytest.fixture
def Parser(twin):
    return twin[0]


@pytest.fixture
def StreamParser(twin):
    return twin[1]


@pytest.fixture(scope="session")
def cparser():
    if gp.CParser is None:
        pytest.fail(f"the Cython parser is not built ({gp.CYTHON_ERROR})")
    return gp.CParser()


@pytest.fixture(scope="session")
def pyparser():
    return gp.PyParser()

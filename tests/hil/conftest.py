"""Fixtures for the hil tests: a virtual board on a pty, stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.board import Board
from hil.virtual_board import VirtualBoard


@pytest.fixture
def vboard(tmp_path: Path) -> Iterator[VirtualBoard]:
    """A virtual MicroPython board whose filesystem is tmp_path/fs."""
    with VirtualBoard(tmp_path / "fs", log_path=tmp_path / "serial.log") as vb:
        yield vb


@pytest.fixture
def vboard_conn(vboard: VirtualBoard) -> Iterator[Board]:
    """A Board connected to the virtual board, in the raw REPL."""
    with Board.open(vboard.port) as b:
        b.enter_raw()
        yield b

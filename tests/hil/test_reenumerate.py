"""Native-USB boards (Pico W, ESP32-S3) re-enumerate on a hard reset: the serial device
goes away and comes back.  The virtual board does the same with reenumerate=True (a
/dev/serial/by-id-like symlink to a pty that is closed, removed and re-created), and
hil.Board reopens the port after machine.reset() / a power cycle."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hil.board import Board, BoardError
from hil.virtual_board import VirtualBoard


def test_hard_reset_reopens_a_reenumerated_port(tmp_path: Path) -> None:
    with VirtualBoard(tmp_path / "fs", reenumerate=True, log_path=tmp_path / "serial.log") as vb:
        assert Path(vb.port).is_symlink()
        with Board.open(vb.port) as b:
            b.enter_raw()
            b.exec("import os\nf = open('mark', 'w'); f.write('1'); f.close()")
            assert b.hard_reset() is True  # the port went away within the settle time
            assert b.reopens == 1 and vb.reenumerations == 1
            vb.wait_booted(2, hard=True)
            assert Path(vb.port).is_symlink()  # a new pty behind the same name (its number may be reused)
            b.enter_raw()
            assert b.exec("print(open('mark').read())").strip() == "1"
            # a power cycle too (what the pytest plugin's power_cycle fault does on hardware)
            assert b.hard_reset() is True and b.reopens == 2
            b.enter_raw()
            assert b.exec("print(2 + 2)").strip() == "4"


def test_a_usb_uart_bridge_board_keeps_its_port(vboard: VirtualBoard) -> None:
    """Behind a CP210x/CH340 the port stays: hard_reset does not reopen it."""
    with Board.open(vboard.port) as b:
        b.enter_raw()
        assert b.hard_reset(settle=1.0) is False and b.reopens == 0
        vboard.wait_booted(2, hard=True)
        b.enter_raw()
        assert b.exec("print('same port')").strip() == "same port"


def test_a_port_that_does_not_come_back_is_a_clear_error(tmp_path: Path) -> None:
    link = tmp_path / "usb-gone-if00"
    vb = VirtualBoard(tmp_path / "fs", reenumerate=True, log_path=tmp_path / "serial.log").start()
    try:
        with Board.open(vb.port) as b:
            b.enter_raw()
            b.url = str(link)  # as if the by-id name never reappeared
            with pytest.raises(BoardError, match=r"did not come back within 1 s after the board reset"):
                b.reopen(timeout=1.0)
    finally:
        vb.stop()


def test_reopen_waits_for_the_device_to_reappear(tmp_path: Path) -> None:
    """The device node appears only after a while (udev): reopen keeps trying until then."""
    with VirtualBoard(tmp_path / "fs", reenumerate=True, log_path=tmp_path / "serial.log") as vb:
        with Board.open(vb.port) as b:
            b.enter_raw()
            real = vb.port
            b.url = str(tmp_path / "late-if00")
            t = threading.Timer(1.0, lambda: Path(b.url).symlink_to(Path(real).resolve()))
            t.start()
            b.reopen(timeout=10)
            t.join()
            b.enter_raw()
            assert b.exec("print('back')").strip() == "back"

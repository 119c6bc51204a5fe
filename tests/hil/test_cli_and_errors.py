"""`lunabase board` as a process, and the errors a user sees when a board does not answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.board import Board
from hil.flash import Broker, FlashError, flash, node_config
from hil.rawrepl import RawReplError
from hil.virtual_board import VirtualBoard
from sim.mosquitto import free_port
from wire.inventory import Inventory

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def test_board_command_prints_its_port_and_stops_cleanly(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "hil", "board", "--dir", str(tmp_path / "fs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("virtual MicroPython board on /dev/"), line + p.stderr.read()  # type: ignore[union-attr]
        port = line.split()[4]
        (tmp_path / "fs" / "marker.txt").write_text("x")
        r = subprocess.run([MPREMOTE, "connect", port, "ls"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "marker.txt" in r.stdout, r.stdout + r.stderr
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        assert not os.path.exists(port) or _no_vm(tmp_path)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]


def _no_vm(tmp_path: Path) -> bool:
    time.sleep(0.5)
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return str(tmp_path / "fs") not in out


def test_a_silent_port_gives_a_clear_raw_repl_error() -> None:
    m, s = os.openpty()
    try:
        os.write(m, b"rst:0x1 (POWERON_RESET),boot:0x13\r\n")  # what a stuck board might print
        with Board.open(os.ttyname(s)) as b, pytest.raises(RawReplError) as ei:
            b.repl.enter(retries=2, timeout=0.3)
        msg = str(ei.value)
        assert "could not enter the raw REPL after 2 attempts" in msg
        assert "another program" in msg
    finally:
        os.close(m)
        os.close(s)


def test_flash_fails_clearly_when_the_broker_is_unreachable(vboard: VirtualBoard, tmp_path: Path) -> None:
    inv = Inventory.generate("hiltest", ["n01"]).save(tmp_path / "base.toml")
    br = Broker("127.0.0.1", free_port())  # nothing listens there
    with Board.open(vboard.port) as b, pytest.raises(FlashError, match="birth: cannot reach the broker"):
        flash(b, node_config(inv, "n01", br), br, birth_timeout=5)


def test_flash_rejects_an_unknown_node(tmp_path: Path) -> None:
    inv = Inventory.generate("hiltest", ["n01"]).save(tmp_path / "base.toml")
    with pytest.raises(FlashError, match="no node 'nX'"):
        node_config(inv, "nX", Broker("127.0.0.1", 1))


def test_flash_config_has_custody_on_unless_told_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A flashed node's receiver is a lunabase ground (custody acks by default): custody on;
    `--custody 0` turns it off; a value the firmware would refuse fails before the board is touched."""
    from lunabase.cli import main

    inv = Inventory.generate("hiltest", ["n01"]).save(tmp_path / "base.toml")
    br = Broker("127.0.0.1", 1)
    assert node_config(inv, "n01", br)["journal"]["custody_s"] == 10
    assert node_config(inv, "n01", br, custody_s=0)["journal"]["custody_s"] == 0
    assert node_config(inv, "n01", br, extra={"journal.segments": 4})["journal"] == {"custody_s": 10, "segments": 4}
    rc = main(["flash", "--port", str(tmp_path / "no-such-port"), "--node", "n01", "--inventory", str(inv),
               "--broker", "mqtt://127.0.0.1:1", "--custody", "-1"])
    assert rc != 0 and "--custody -1" in capsys.readouterr().err

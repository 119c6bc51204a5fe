"""The virtual board behaves like a MicroPython board on a serial port: raw REPL,
raw-paste, files, soft reset, Ctrl-C; and the real mpremote talks to it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.board import Board, BoardResetError, ExpectTimeout
from hil.rawrepl import ExecTimeout, RemoteError
from hil.virtual_board import VirtualBoard, _set_raw

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def test_raw_repl_exec_keeps_stdout_and_stderr_apart(vboard_conn: Board) -> None:
    # as on a board, the raw REPL's second section is the uncaught exception's traceback
    out, err = vboard_conn.exec_raw("print('out')\nraise ValueError('boom')")
    assert out == b"out\n"
    assert b"ValueError: boom" in err and b"out" not in err
    with pytest.raises(RemoteError, match="ZeroDivisionError"):
        vboard_conn.exec("1/0")


def test_raw_paste_and_plain_raw_fallback(vboard_conn: Board) -> None:
    big = "x = 0\n" + "x += 1\n" * 2000 + "print(x)"  # far beyond one raw-paste window
    assert vboard_conn.exec(big).strip() == "2000"
    assert vboard_conn.repl.use_raw_paste  # the board offered raw-paste
    vboard_conn.repl.use_raw_paste = False
    assert vboard_conn.exec(big).strip() == "2000"


def test_exec_timeout_interrupts_a_busy_loop(vboard_conn: Board) -> None:
    with pytest.raises(ExecTimeout):
        vboard_conn.exec("while True:\n pass", timeout=1.0)
    assert vboard_conn.exec("print('alive')") == "alive\n"


def test_board_info_reads_mpy_version(vboard_conn: Board) -> None:
    info = vboard_conn.info()
    assert info.mpy_version == 6
    assert info.arch in ("x64", "x86", "armv6", "armv7m", "rv64imc", None) or info.arch


def test_files_atomic_write_sha256_and_listing(vboard: VirtualBoard, vboard_conn: Board) -> None:
    data = os.urandom(9000)
    seen: list[tuple[int, int]] = []
    vboard_conn.write_file("blob.bin", data, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (9000, 9000)
    assert (vboard.dir / "blob.bin").read_bytes() == data
    assert not (vboard.dir / "blob.bin.tmp").exists()
    assert vboard_conn.sha256("blob.bin") == hashlib.sha256(data).hexdigest()
    assert vboard_conn.sha256("nope") is None
    assert vboard_conn.read_file("blob.bin") == data
    vboard_conn.mkdir("/lib/deep/er")
    assert ("deep", True, 4096) in vboard_conn.ls("/lib") or any(n == "deep" and d for n, d, _ in vboard_conn.ls("/lib"))
    assert vboard_conn.stat("blob.bin")[6] == 9000
    vboard_conn.remove("blob.bin")
    assert vboard_conn.stat("blob.bin") is None
    vboard_conn.remove("blob.bin")  # missing_ok


def test_soft_reset_runs_boot_then_main_and_ctrl_c_stops_main(vboard_conn: Board) -> None:
    b = vboard_conn
    b.write_file("boot.py", b"print('boot ran')\n")
    b.write_file("main.py", b"import time\nprint('main started')\nwhile True:\n    time.sleep(0.05)\n")
    b.soft_reset_raw()  # in the raw REPL: boot.py only, like a real port
    assert b.exec("print('still raw')") == "still raw\n"
    b.reset()
    b.expect(rb"boot ran", timeout=30)
    b.expect(rb"main started", timeout=30)
    b.enter_raw()  # Ctrl-C interrupts main.py
    assert b.exec("print(1 + 1)") == "2\n"
    b.repl.exit()
    b.enter_raw(soft_reset=True)  # enter + soft reset in one go, as mpremote does
    assert b.exec("x = 5\nprint(x)") == "5\n"
    b.soft_reset_raw()
    assert b.exec("print('x' in globals())") == "False\n"  # a fresh VM
    with pytest.raises(ExpectTimeout, match="never printed"):
        b.repl.exit()
        b.expect(rb"never printed", timeout=0.5)


def test_reset_mid_upload_leaves_previous_main_intact(vboard: VirtualBoard, vboard_conn: Board) -> None:
    old = b"print('old main')\n"
    vboard_conn.write_file("main.py", old)
    new = b"print('new main')\n" + b"#" * 24_000  # six 4 KB execs: the kill lands after the second

    killed: list[int] = []

    def kill_midway(done: int, total: int) -> None:
        if done >= total // 3 and not killed:
            killed.append(done)
            os.kill(vboard.vm_pid or 0, 9)  # the board loses power mid-copy

    # the board reboots and prints its banner: the host says so at once (no exec timeout)
    with pytest.raises(BoardResetError, match=f"upload interrupted after 8192 of {len(new)} bytes because the board reset"):
        vboard_conn.write_file("main.py", new, progress=kill_midway)
    assert (vboard.dir / "main.py").read_bytes() == old
    vboard.wait_booted(2)
    # the next session sees the old main.py, and a retried upload replaces the stale .tmp
    with Board.open(vboard.port) as b2:
        b2.enter_raw()
        assert b2.read_file("main.py") == old
        b2.write_file("main.py", new)
        assert b2.sha256("main.py") == hashlib.sha256(new).hexdigest()
        assert b2.stat("main.py.tmp") is None


def _mpremote(port: str, *args: str) -> str:
    r = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"mpremote {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_mpremote_connect_ls_cp_exec_soft_reset_reset(vboard: VirtualBoard, tmp_path: Path) -> None:
    src = tmp_path / "hello.py"
    src.write_text("print('hello from the board')\n")
    assert _mpremote(vboard.port, "ls").startswith("ls :")
    _mpremote(vboard.port, "cp", str(src), ":hello.py")
    assert (vboard.dir / "hello.py").read_text() == src.read_text()
    listing = _mpremote(vboard.port, "ls")
    assert f"{src.stat().st_size} hello.py" in listing, listing  # sizes, as from a board
    assert "hello from the board" in _mpremote(vboard.port, "exec", "import hello")
    assert "hello from the board" in _mpremote(vboard.port, "fs", "cat", ":hello.py")
    boots = vboard.boots
    _mpremote(vboard.port, "soft-reset")
    assert vboard.boots > boots
    hard = vboard.hard_boots
    _mpremote(vboard.port, "reset")  # machine.reset(): a hard reset, main.py would run
    vboard.wait_booted(hard + 1, hard=True)  # mpremote soft-resets first; wait for the hard one
    _mpremote(vboard.port, "cp", ":hello.py", str(tmp_path / "back.py"))
    assert (tmp_path / "back.py").read_text() == src.read_text()
    _mpremote(vboard.port, "rm", ":hello.py")
    assert not (vboard.dir / "hello.py").exists()


def test_output_the_host_does_not_read_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A host that never reads the port fills the pty: after a bounded wait the rest is dropped, counted, logged."""
    vb = VirtualBoard(tmp_path / "fs", micropython="micropython")  # never started: only the bridge half
    master, slave = os.openpty()
    _set_raw(slave)  # as start() does: bytes, not lines
    os.set_blocking(master, False)
    vb._host_master = master
    try:
        data = b"x" * (1 << 20)  # far more than a pty buffers
        vb._to_host(data)
        vb._to_host(b"more")
        os.set_blocking(slave, False)
        got = 0
        while True:
            try:
                chunk = os.read(slave, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += len(chunk)
        assert 0 < vb.dropped_to_host < len(data) + 4
        assert got + vb.dropped_to_host == len(data) + 4
        assert "not reading the serial line" in caplog.text
        assert vb.log_path.read_bytes() == data + b"more"  # the serial log keeps everything
    finally:
        os.close(master)
        os.close(slave)
        vb._log.close()

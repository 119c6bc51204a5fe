"""A MicroPython board on a serial port: exec, files with atomic writes, resets, the serial log.

    with Board.open("/dev/ttyUSB0") as b:          # or a pty path, or socket://host:port
        b.exec("print(1 + 1)")                       # '2\\n'
        b.write_file("main.py", src)                 # main.py.tmp, sha256 checked on the board, rename
        b.sha256("main.py"); b.ls("/"); b.read_file("config.json")
        b.reset()                                    # soft reset into boot.py + main.py
        b.expect(rb"online", timeout=30)             # wait for the node to print something

Ports are opened with `serial.serial_for_url`, so a real board, a `lunabase board`
pseudo-terminal and an RFC 2217 / socket bridge all work the same.  Every byte the board
prints (raw REPL traffic included) is kept in `log` and appended to `log_path`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial

from hil.rawrepl import BoardError, BoardResetError, ExecTimeout, RawRepl, RawReplError, RemoteError

__all__ = ["Board", "BoardInfo", "BoardError", "RawReplError", "BoardResetError", "ExecTimeout", "RemoteError",
           "ExpectTimeout"]

# index = sys.implementation._mpy >> 10 (MicroPython docs, "MicroPython .mpy files")
MPY_ARCHS = (
    None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
    "xtensa", "xtensawin", "rv32imc", "rv64imc",
)  # fmt: skip


class ExpectTimeout(BoardError):
    """`Board.expect` did not see its pattern; the message shows the buffer tail and log path."""


@dataclass(frozen=True)
class BoardInfo:
    """What the board says about itself."""

    platform: str
    version: str  # e.g. "1.29.0"
    machine: str
    mpy: int  # raw sys.implementation._mpy (0 when the port has no .mpy support)

    @property
    def mpy_version(self) -> int:
        return self.mpy & 0xFF

    @property
    def mpy_sub_version(self) -> int:
        return (self.mpy >> 8) & 3

    @property
    def arch(self) -> str | None:
        """`mpy-cross -march` for native code on this board (None: bytecode only)."""
        i = self.mpy >> 10
        return MPY_ARCHS[i] if i < len(MPY_ARCHS) else None


class Board:
    """A board on a serial port; see the module docstring.  Thread-safe (one lock)."""

    def __init__(self, ser: Any, log_path: str | Path | None = None, name: str = "") -> None:
        self.ser = ser
        self.name = name or getattr(ser, "port", "") or "board"
        self.log = bytearray()
        self.log_path = Path(log_path) if log_path else None
        self._logf = open(self.log_path, "ab", buffering=0) if self.log_path else None
        self.repl = RawRepl(ser, on_read=self._on_read)
        self._expect_pos = 0
        self._lock = self.repl.lock
        self.virtual: Any = None  # the VirtualBoard behind the port, when there is one
        self.url = getattr(ser, "port", "") or name  # what reopen() opens again
        self.baudrate = getattr(ser, "baudrate", 115200)
        self.reopens = 0  # times the port was reopened after it disappeared

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, log_path: str | Path | None = None) -> Board:
        """Open `url` (device path, pty, socket://...) with pyserial's `serial_for_url`."""
        try:
            ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, write_timeout=10)
        except serial.SerialException as e:
            raise BoardError(f"cannot open {url}: {e}") from None
        b = cls(ser, log_path=log_path, name=url)
        b.url, b.baudrate = url, baudrate
        return b

    def _port_gone(self) -> bool:
        """True when the port has disappeared (native USB re-enumerating, cable pulled)."""
        if "://" not in self.url and not os.path.exists(self.url):
            return True
        try:
            if not self.ser.in_waiting and hasattr(self.ser, "fileno"):
                # a hung-up / vanished tty selects readable and reads nothing: pyserial raises
                r, _, _ = select.select([self.ser.fileno()], [], [], 0)
                if r:
                    data = self.ser.read(1)
                    self._on_read(data)
                    self.repl._rbuf += data
        except (serial.SerialException, OSError, TypeError, ValueError, AttributeError):
            return True
        return False

    def reopen(self, timeout: float = 20.0) -> None:
        """Close the port and open `url` again, retrying until `timeout` s: a board with native
        USB (Pico W, ESP32-S3) re-enumerates on a hard reset, so its device goes away and comes
        back (use the /dev/serial/by-id/ name: the ttyACM number may change).  BoardError when it
        does not come back."""
        with self._lock:
            try:
                self.ser.close()
            except Exception:
                pass
            deadline = time.monotonic() + timeout
            last: Exception | None = None
            while True:
                try:
                    ser = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05, write_timeout=10)
                    break
                except (serial.SerialException, OSError) as e:
                    last = e
                if time.monotonic() > deadline:
                    raise BoardError(
                        f"{self.url} did not come back within {timeout:g} s after the board reset "
                        f"(native USB re-enumerates: is the cable in, is it the /dev/serial/by-id/ name?): {last}"
                    )
                time.sleep(0.1)
            self.ser = ser
            self.repl.ser = ser
            self.repl.in_raw = False
            self.repl._rbuf.clear()
            self.reopens += 1

    def close(self) -> None:
        """Leave the raw REPL (so main.py keeps the port's friendly REPL) and close the port."""
        try:
            if self.repl.in_raw:
                self.repl.exit()
        except Exception:
            pass
        self.ser.close()
        if self._logf:
            self._logf.close()
            self._logf = None

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_read(self, data: bytes) -> None:
        self.log += data
        if len(self.log) > 4_000_000:
            cut = len(self.log) - 2_000_000
            del self.log[:cut]
            self._expect_pos = max(0, self._expect_pos - cut)
        if self._logf:
            self._logf.write(data)

    # --- code -----------------------------------------------------------------------
    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run `code` in the raw REPL; its stdout, or RemoteError with the board's traceback."""
        return self.repl.exec(code, timeout)

    def exec_raw(self, code: str, timeout: float = 10.0) -> tuple[bytes, bytes]:
        """Run `code`; (stdout, stderr) kept apart, no exception on a remote error."""
        return self.repl.exec_raw(code, timeout)

    def eval(self, expr: str, timeout: float = 10.0) -> Any:
        """Evaluate `expr` on the board; its repr read back as a Python literal."""
        import ast

        out = self.exec(f"print(repr({expr}))", timeout).strip()
        return ast.literal_eval(out)

    def info(self) -> BoardInfo:
        """Platform, version and .mpy version/arch (from `sys.implementation._mpy`)."""
        platform, version, machine, mpy = self.eval(
            "(__import__('sys').platform, '.'.join(str(x) for x in __import__('sys').implementation.version[:3]),"
            " getattr(__import__('sys').implementation, '_machine', ''),"
            " getattr(__import__('sys').implementation, '_mpy', 0))"
        )
        return BoardInfo(platform, version, machine, int(mpy))

    # --- files ----------------------------------------------------------------------
    def ls(self, path: str = "/") -> list[tuple[str, bool, int]]:
        """(name, is_dir, size) for each entry of `path`."""
        return [
            (n, bool(d), int(s))
            for n, d, s in self.eval(
                f"[(n, s[0] & 0x4000 != 0, s[6]) for n, s in ((n, __import__('os').stat({path!r}.rstrip('/') + '/' + n)) "
                f"for n in __import__('os').listdir({path!r}))]"
            )
        ]

    def stat(self, path: str) -> tuple[int, ...] | None:
        """os.stat of `path` on the board, or None when it does not exist."""
        import ast

        out = self.exec(
            f"import os as _o\ntry:\n print(repr(tuple(_o.stat({path!r}))))\nexcept OSError:\n print('None')"
        )
        return ast.literal_eval(out.strip())

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def read_file(self, path: str, chunk: int = 1024, timeout: float = 30.0) -> bytes:
        """The bytes of `path` on the board (hex-encoded on the wire)."""
        out = self.exec(
            f"import binascii as _b\nwith open({path!r}, 'rb') as _f:\n"
            f" while True:\n  _c = _f.read({chunk})\n  if not _c: break\n  print(_b.hexlify(_c).decode())",
            timeout,
        )
        return binascii.unhexlify("".join(out.split()))

    def sha256(self, path: str, timeout: float = 30.0) -> str | None:
        """Hex sha256 of `path` computed on the board (hashlib), or None when it is missing."""
        out = self.exec(
            "import hashlib as _h, binascii as _b\n"
            f"try:\n _f = open({path!r}, 'rb')\nexcept OSError:\n print('MISSING')\nelse:\n"
            " _s = _h.sha256()\n while True:\n  _c = _f.read(512)\n  if not _c: break\n  _s.update(_c)\n"
            " _f.close()\n print(_b.hexlify(_s.digest()).decode())",
            timeout,
        ).strip()
        return None if out == "MISSING" else out

    def mkdir(self, path: str, exist_ok: bool = True) -> None:
        """Create `path` (and its parents) on the board."""
        self.exec(
            f"import os as _o\n_p = ''\nfor _s in {path!r}.split('/'):\n if not _s: _p = '/' if not _p else _p; continue\n"
            " _p = _p + _s if _p.endswith('/') or not _p else _p + '/' + _s\n"
            f" try:\n  _o.mkdir(_p)\n except OSError as _e:\n  if _e.args[0] != 17 or (not {exist_ok!r} and _p == {path!r}): raise"
        )

    def remove(self, path: str, missing_ok: bool = True) -> None:
        """Delete the file `path` on the board."""
        self.exec(
            f"import os as _o\ntry:\n _o.remove({path!r})\nexcept OSError as _e:\n"
            f" if _e.args[0] != 2 or not {missing_ok!r}: raise"
        )

    def write_file(
        self,
        path: str,
        data: bytes,
        chunk: int = 1024,
        progress: Callable[[int, int], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Atomic write: upload to `path.tmp`, verify its sha256 on the board, rename over `path`.

        A reset in the middle leaves the previous `path` untouched (and a stale .tmp that the
        next write overwrites).  `progress(done, total)` is called after each chunk."""
        tmp = path + ".tmp"
        total = len(data)
        self.exec(f"_f = open({tmp!r}, 'wb')\nimport binascii as _b")
        try:
            done = 0
            per_exec = 4 * chunk
            while done < total:
                part = data[done : done + per_exec]
                lines = [
                    f"_f.write(_b.a2b_base64({base64.b64encode(part[i : i + chunk]).decode()!r}))"
                    for i in range(0, len(part), chunk)
                ]
                try:
                    self.exec("\n".join(lines), timeout)
                except BoardResetError as e:
                    raise BoardResetError(
                        f"{path}: upload interrupted after {done} of {total} bytes because the board reset; "
                        f"{path} on the board is unchanged ({tmp} may be left behind, the next write replaces it)",
                        e.seen,
                    ) from None
                done += len(part)
                if progress:
                    progress(done, total)
        finally:
            try:
                self.exec("_f.close()")
            except BoardError:
                pass
        want = hashlib.sha256(data).hexdigest()
        got = self.sha256(tmp, timeout)
        if got != want:
            raise BoardError(f"{path}: upload corrupted (sha256 on the board {got}, expected {want}); {tmp} left behind")
        # POSIX/littlefs rename replaces atomically; FAT refuses an existing target, so remove it first there
        self.exec(
            f"import os as _o\ntry:\n _o.rename({tmp!r}, {path!r})\nexcept OSError:\n"
            f" _o.remove({path!r})\n _o.rename({tmp!r}, {path!r})"
        )
        if progress and total == 0:
            progress(0, 0)

    # --- resets and the running program ---------------------------------------------
    def enter_raw(self, soft_reset: bool = False) -> None:
        """Interrupt whatever runs and enter the raw REPL (see RawRepl.enter)."""
        self.repl.enter(soft_reset=soft_reset)

    def soft_reset_raw(self) -> None:
        """Soft reset staying in the raw REPL: boot.py runs, main.py does not."""
        self.repl.soft_reset()

    def reset(self, timeout: float = 15.0) -> None:
        """Soft reset into boot.py + main.py (Ctrl-B, Ctrl-D at the friendly prompt)."""
        with self._lock:
            if not self.repl.in_raw:
                self.repl.enter()
            self.repl.exit()
            self.repl.read_until(b">>> ", timeout, "friendly REPL before the reset")
            self._expect_pos = len(self.log)
            self.ser.write(b"\x04")
            self.repl.read_until(b"soft reboot\r\n", timeout, "soft reboot")

    def hard_reset(self, settle: float = 1.5, reopen_timeout: float = 20.0) -> bool:
        """machine.reset(); when the port disappears within `settle` s (a native-USB board
        re-enumerating), it is reopened (retried for `reopen_timeout` s, then BoardError).
        Returns True when the port was reopened."""
        with self._lock:
            if not self.repl.in_raw:
                self.repl.enter()
            self.ser.write(b"import machine\nmachine.reset()\x04")
            self.repl.in_raw = False
            self._expect_pos = len(self.log)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            with self._lock:
                if self._port_gone():
                    self.reopen(reopen_timeout)
                    return True
            time.sleep(0.05)
        return False

    def poll(self) -> None:
        """Move whatever the board printed into the log (call while main.py runs)."""
        with self._lock:
            if self.repl.in_raw:
                return
            self.repl._fill(wait=False)
            self.repl._rbuf.clear()

    def expect(self, pattern: bytes | str, timeout: float = 30.0) -> re.Match[bytes]:
        """Wait until the board prints `pattern` (regex) after the last expect/reset.

        ExpectTimeout shows what the board printed and the log path."""
        pat = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                m = pat.search(self.log, self._expect_pos)
                if m:
                    self._expect_pos = m.end()
                    return m
                if not self.repl.in_raw:
                    self.repl._fill(wait=True)
                    self.repl._rbuf.clear()
            if time.monotonic() > deadline:
                tail = bytes(self.log[self._expect_pos :][-1500:]).decode(errors="replace")
                raise ExpectTimeout(
                    f"{self.name}: {pat.pattern!r} not printed within {timeout:g} s; the board printed:\n{tail}"
                    + (f"\n(serial log: {self.log_path})" if self.log_path else "")
                )
            time.sleep(0.01)

    def start_monitor(self) -> threading.Event:
        """Keep moving the board's output into the log while main.py runs (a daemon thread);
        set the returned event to stop it."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set() and self.ser.is_open:
                try:
                    self.poll()
                except Exception:
                    return
                time.sleep(0.05)

        threading.Thread(target=run, name=f"monitor {self.name}", daemon=True).start()
        return stop

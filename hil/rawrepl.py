"""The MicroPython raw REPL over any pyserial port, with raw-paste flow control.

Protocol (what a board speaks on its USB/UART REPL)::

    \\r\\x03\\x03        interrupt whatever runs (main.py, an exec)
    \\r\\x01            enter the raw REPL  -> "raw REPL; CTRL-B to exit\\r\\n>"
    \\x04 (empty line) soft reset           -> "soft reboot\\r\\n" ... "raw REPL; CTRL-B to exit\\r\\n>"
    \\x05A\\x01          enter raw-paste     -> "R\\x01" + window size (uint16 LE), or "R\\x00" (no support)
        send at most `window` bytes, then wait for \\x01 (one more window) ; \\x04 ends the code
        board acks with \\x04, runs it, prints  stdout \\x04 stderr \\x04 >
    plain raw: code then \\x04                -> "OK" stdout \\x04 stderr \\x04 >
    \\r\\x02            back to the friendly REPL

Exceptions of the whole HIL tooling (one root, `BoardError`, a RuntimeError)::

    BoardError
     +-- RawReplError        could not enter / talk the raw REPL; carries what the board printed
     |    +-- BoardResetError  the board rebooted mid-exchange (its boot banner arrived)
     +-- ExecTimeout         code did not finish in time (it was interrupted with Ctrl-C)
     +-- RemoteError         code raised on the board; carries the board's traceback
     +-- ExpectTimeout       hil.board: the expected output did not appear in time
     +-- FlashError          hil.flash: a flashing step failed; the message names the step
     +-- VirtualBoardError   hil.virtual_board: the virtual board could not start
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BoardError", "RawReplError", "BoardResetError", "ExecTimeout", "RemoteError", "RawRepl"]

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
SOFT_REBOOT = b"soft reboot\r\n"
# the end of the banner every port prints after boot.py/main.py, before the friendly prompt
BOOT_BANNER = b'Type "help()" for more information.'


class BoardError(RuntimeError):
    """Root of the board-control errors."""


class RawReplError(BoardError):
    """The raw REPL did not answer as expected; `seen` is what the board printed."""

    def __init__(self, message: str, seen: bytes = b"") -> None:
        tail = seen[-600:]
        super().__init__(f"{message}\n  the board printed (last {len(tail)} bytes): {tail!r}" if seen else message)
        self.seen = seen


class BoardResetError(RawReplError):
    """The board rebooted in the middle of an exchange (its boot banner arrived)."""


class ExecTimeout(BoardError):
    """Code on the board ran past its timeout; it was interrupted (Ctrl-C)."""

    def __init__(self, message: str, stdout: bytes = b"") -> None:
        super().__init__(f"{message}\n  output so far: {stdout[-400:]!r}")
        self.stdout = stdout


class RemoteError(BoardError):
    """Code on the board raised; `traceback` is the board's stderr, `stdout` what it printed before."""

    def __init__(self, traceback: str, stdout: str = "", code: str = "") -> None:
        lines = traceback.strip().splitlines()
        last = lines[-1] if lines else "?"
        super().__init__(f"on the board: {last}\n{traceback.rstrip()}")
        self.traceback = traceback
        self.stdout = stdout
        self.code = code


class RawRepl:
    """Raw-REPL session over an open pyserial port (`serial.Serial` or anything with its API).

    `on_read` receives every byte read from the board (the serial log)."""

    def __init__(self, ser: Any, on_read: Callable[[bytes], None] | None = None, use_raw_paste: bool = True) -> None:
        self.ser = ser
        self.on_read = on_read
        self.use_raw_paste = use_raw_paste
        self.in_raw = False
        self.lock = threading.RLock()
        self._rbuf = bytearray()

    # --- low level (buffered: bytes read past an ending stay in self._rbuf) ----------
    def _fill(self, wait: bool) -> bool:
        """Read what is available (or wait up to the port timeout for 1 byte when `wait`)."""
        n = self.ser.in_waiting
        if not n and not wait:
            return False
        data = self.ser.read(n or 1)
        if data:
            if self.on_read:
                self.on_read(data)
            self._rbuf += data
            return True
        return False

    def _pending(self) -> bool:
        return bool(self._rbuf) or bool(self.ser.in_waiting)

    def read_until(self, ending: bytes, timeout: float, what: str = "", abort: tuple[bytes, ...] = ()) -> bytes:
        """Read until `ending` (inclusive); RawReplError with what was seen after `timeout` s,
        or at once when one of `abort` shows up first (BoardResetError for a boot banner)."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            i = self._rbuf.find(ending, start)
            if i >= 0:
                j = i + len(ending)
                out = bytes(self._rbuf[:j])
                del self._rbuf[:j]
                return out
            for pat in abort:
                if self._rbuf.find(pat, max(0, start - len(pat))) >= 0:
                    seen = bytes(self._rbuf)
                    self._rbuf.clear()
                    self.in_raw = False
                    raise BoardResetError(
                        "the board reset (it printed its boot banner) while the host waited for "
                        f"{ending!r}" + (f" ({what})" if what else "") + "; the code did not complete", seen)
            start = max(0, len(self._rbuf) - len(ending) + 1)
            if not self._fill(wait=True) and time.monotonic() > deadline:
                seen = bytes(self._rbuf)
                self._rbuf.clear()
                raise RawReplError(
                    f"timeout after {timeout:g} s waiting for {ending!r}" + (f" ({what})" if what else ""), seen
                )

    def read_exact(self, n: int, timeout: float) -> bytes:
        """Exactly `n` bytes, or RawReplError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(self._rbuf) < n:
            if not self._fill(wait=True) and time.monotonic() > deadline:
                raise RawReplError(f"timeout reading {n} bytes", bytes(self._rbuf))
        out = bytes(self._rbuf[:n])
        del self._rbuf[:n]
        return out

    def drain(self, quiet: float = 0.15, limit: float = 3.0) -> bytes:
        """Read and return whatever the board prints until it is quiet for `quiet` s."""
        deadline = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self._fill(wait=False):
                last = time.monotonic()
            elif time.monotonic() - last > quiet:
                break
            else:
                time.sleep(0.01)
        out = bytes(self._rbuf)
        self._rbuf.clear()
        return out

    # --- entering / leaving ---------------------------------------------------------
    def enter(self, soft_reset: bool = False, retries: int = 3, timeout: float = 5.0) -> None:
        """Enter the raw REPL: Ctrl-C twice, drain, Ctrl-A; retry; optionally soft reset.

        Raises RawReplError with everything the board printed on the last attempt."""
        with self.lock:
            seen = b""
            for attempt in range(1, retries + 1):
                self.ser.write(b"\r\x03")
                time.sleep(0.05)
                self.ser.write(b"\x03")
                seen = self.drain(quiet=0.1 * attempt, limit=2.0 * attempt)
                self.ser.write(b"\r\x01")
                try:
                    seen += self.read_until(RAW_PROMPT, timeout * attempt, "entering the raw REPL")
                except RawReplError as e:
                    seen += e.seen
                    continue
                if soft_reset:
                    self._soft_reset_in_raw(timeout * 3)
                self.in_raw = True
                return
            raise RawReplError(
                f"could not enter the raw REPL after {retries} attempts (Ctrl-C, Ctrl-A). Is another program "
                "(screen, minicom, Thonny, mpremote) holding the port? Is main.py ignoring Ctrl-C "
                "(long sleeps with interrupts off, a tight loop in native code)? Is the baud rate right?",
                seen,
            )

    def _soft_reset_in_raw(self, timeout: float) -> None:
        self.ser.write(b"\x04")
        self.read_until(SOFT_REBOOT, timeout, "soft reset")
        self.read_until(RAW_PROMPT, timeout, "raw REPL after the soft reset (boot.py running?)")

    def soft_reset(self, timeout: float = 15.0) -> None:
        """Soft reset and stay in the raw REPL (boot.py runs, main.py does not)."""
        with self.lock:
            if not self.in_raw:
                self.enter()
            self._soft_reset_in_raw(timeout)

    def exit(self) -> None:
        """Back to the friendly REPL."""
        with self.lock:
            self.ser.write(b"\r\x02")
            self.in_raw = False

    # --- exec -----------------------------------------------------------------------
    def _paste(self, code: bytes, timeout: float) -> bool:
        """Send `code` in raw-paste mode; False if the board does not support it (still in raw REPL)."""
        self.ser.write(b"\x05A\x01")
        head = self.read_exact(2, timeout)
        flag = head[1:]
        if head[:1] != b"R" or flag not in (b"\x00", b"\x01"):
            # a firmware older than raw-paste echoes the bytes: resync on the raw prompt
            # ... unless the board rebooted (power loss, brown-out, watchdog): then it prints
            # its banner and sits at the friendly prompt, and waiting for the raw one is futile
            self.read_until(b"w REPL; CTRL-B to exit\r\n>", timeout, "raw REPL after an unknown raw-paste request",
                            abort=(BOOT_BANNER,))
            return False
        if flag == b"\x00":
            return False
        window = struct.unpack("<H", self.read_exact(2, timeout))[0]
        remain = window
        i = 0
        deadline = time.monotonic() + timeout
        while i < len(code):
            while remain == 0 or self._pending():
                b = self.read_exact(1, max(0.0, deadline - time.monotonic())) if remain == 0 else self.read_exact(1, 1.0)
                if b == b"\x01":
                    remain += window
                elif b == b"\x04":  # the board aborted (e.g. syntax error early): ack and stop
                    self.ser.write(b"\x04")
                    return True
                else:
                    raise RawReplError(f"raw-paste: unexpected byte {b!r} from the board", b + self.drain())
            chunk = code[i : i + remain]
            self.ser.write(chunk)
            remain -= len(chunk)
            i += len(chunk)
        self.ser.write(b"\x04")
        self.read_until(b"\x04", timeout, "raw-paste end acknowledgment")
        return True

    def exec_raw(self, code: str | bytes, timeout: float = 10.0) -> tuple[bytes, bytes]:
        """Run `code` on the board; returns (stdout, stderr) kept apart.

        Raises ExecTimeout (after interrupting the board) when it runs past `timeout` s."""
        data = code.encode() if isinstance(code, str) else code
        with self.lock:
            if not self.in_raw:
                self.enter()
            sent = False
            if self.use_raw_paste:
                sent = self._paste(data, max(timeout, 5.0))
                if not sent:
                    self.use_raw_paste = False
            if not sent:
                for i in range(0, len(data), 256):
                    self.ser.write(data[i : i + 256])
                    time.sleep(0.01)
                self.ser.write(b"\x04")
                ok = self.read_exact(2, 5.0)
                if ok != b"OK":
                    raise RawReplError("the board did not accept the code (expected 'OK')", ok + self.drain())
            try:
                out = self.read_until(b"\x04", timeout, "end of stdout")[:-1]
            except RawReplError as e:
                self.ser.write(b"\x03")
                try:
                    self.read_until(b"\x04>", 5.0)
                except RawReplError:
                    self.in_raw = False
                raise ExecTimeout(f"code did not finish in {timeout:g} s; interrupted with Ctrl-C", e.seen) from None
            err = self.read_until(b"\x04", 5.0, "end of stderr")[:-1]
            self.read_until(b">", 5.0, "raw REPL prompt")
            return out, err

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run `code`; return its stdout as text; RemoteError if it raised."""
        out, err = self.exec_raw(code, timeout)
        if err:
            raise RemoteError(err.decode(errors="replace"), out.decode(errors="replace"), code)
        return out.decode(errors="replace")

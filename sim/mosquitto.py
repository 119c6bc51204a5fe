"""Run a private Debian mosquitto on a free loopback port (tests, demo, simulator, benches).

    with Mosquitto() as broker:            # 127.0.0.1, a free port, no persistence
        ... broker.port ...
        broker.restart()                    # same port, same config, same persistence file
        broker.kill()                       # SIGKILL, then broker.start() brings it back

``extra_config`` lines are appended to the generated configuration (ACLs, password
file, TLS listener...).  ``max_queued_messages 0`` is always set: mosquitto's default of
1000 silently drops QoS 1 messages for a subscriber that falls behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


class MosquittoError(RuntimeError):
    """mosquitto is missing or would not start; the message includes its log."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or MosquittoError saying how to install it."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise MosquittoError("mosquitto is not installed: run 'apt-get install mosquitto' (or bash scripts/setup.sh as root)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Mosquitto:
    """One mosquitto process with its own config, data directory and log."""

    def __init__(
        self,
        port: int | None = None,
        extra_config: str = "",
        persistence: bool = True,
        workdir: str | Path | None = None,
        allow_anonymous: bool = True,
        tls: Any = None,
    ) -> None:
        """``tls``: a ground.broker.TlsFiles; the listener is then TLS only (no plaintext port)."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="lunabase-mosq-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.tls = tls
        lines = [
            f"listener {self.port} 127.0.0.1",
            *([f"cafile {tls.cafile}", f"certfile {tls.certfile}", f"keyfile {tls.keyfile}", "tls_version tlsv1.2"]
              if tls is not None else []),
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "persistent_client_expiration 1d",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # as root mosquitto drops to user "mosquitto", which cannot read or write this
            # private 0700 directory (log, persistence, password/ACL files): stay root
            lines.append("user root")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        self.config_path.write_text("\n".join(lines) + "\n" + extra_config + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise MosquittoError(f"mosquitto exited with {self.proc.returncode}: {err.strip()}\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise MosquittoError(f"mosquitto did not listen on {self.port} within {timeout}s\n{self.log()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): what a crash looks like to clients."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

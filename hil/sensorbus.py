"""A minimal sensor-bus server (docs/sim-protocol.md) for a `sim` board under test.

The HIL suite points the node's ``config["sim"]`` here so a test can set sensor values
and break sensors (``stuck`` / ``noisy`` / ``dead``) while the firmware runs unmodified.
Only what a test sets is sent; the firmware keeps its synthetic values for the rest.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

__all__ = ["SensorBus"]


class SensorBus:
    """Threaded TCP server speaking the sim sensor bus; one or more nodes may connect."""

    def __init__(self, host: str = "127.0.0.1", period: float = 0.3) -> None:
        self.sensors: dict[str, float] = {}
        self.faults: dict[str, str] = {}
        self.hello: list[dict[str, Any]] = []
        self.modes: list[dict[str, Any]] = []
        self.period = period
        self._srv = socket.create_server((host, 0))
        self.host, self.port = self._srv.getsockname()[:2]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> SensorBus:
        t = threading.Thread(target=self._accept, name="sensorbus", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._srv.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass

    def __enter__(self) -> SensorBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set(self, **values: float) -> None:
        """Engineering values (dictionary units) the node's sensors read from now on."""
        self.sensors.update(values)

    def fault(self, sensor: str, kind: str | None) -> None:
        """Break a sensor field ('stuck', 'noisy', 'dead'; 'seismic' for the accelerometer); None repairs it."""
        if kind is None:
            self.faults.pop(sensor, None)
        else:
            self.faults[sensor] = kind

    @property
    def connected(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept(self) -> None:
        self._srv.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(c)
            for target in (self._reader, self._writer):
                t = threading.Thread(target=target, args=(c,), daemon=True)
                t.start()

    def _reader(self, c: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                data = c.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        m = json.loads(line)
                    except ValueError:
                        continue
                    if "hello" in m:
                        self.hello.append(m)
                    if "mode" in m:
                        self.modes.append(m)
        except OSError:
            pass
        finally:
            with self._lock:
                if c in self._conns:
                    self._conns.remove(c)

    def _writer(self, c: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    if c not in self._conns:
                        return
                msg = {"sensors": dict(self.sensors), "faults": dict(self.faults)}
                c.sendall(json.dumps(msg).encode() + b"\n")
                time.sleep(self.period)
        except OSError:
            pass

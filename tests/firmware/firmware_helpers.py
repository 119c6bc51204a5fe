"""Helpers and fixtures for the firmware tests: the firmware compiled like for a board, virtual nodes
running it on the real MicroPython unix port, and a ground-side MQTT recorder."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ground.parse import Parser
from lunabase import ROOT
from wire import ccsds

sys.path.insert(0, str(ROOT / "firmware"))  # firmware/build.py for test_build.py (`import build`)

HEAP = os.environ.get("LUNABASE_NODE_HEAP", "100K")
KEY = bytes(range(32))
SITE = "testsite"


# the compiled image: the session fixture ``firmware_image`` of tests/conftest.py


def node_config(broker_port: int, node: str = "n01", **over: dict) -> dict:
    cfg = {
        "node": node,
        "site": SITE,
        "board": "sim",
        "key": KEY.hex(),
        "broker": {"host": "127.0.0.1", "port": broker_port, "keepalive": 4,
                   "backoff_min_ms": 100, "backoff_max_ms": 800, "connect_timeout_ms": 3000},
        "rates": {"hk_ms": 500, "power_ms": 1000, "thermal_ms": 2000, "radiation_ms": 2000, "seismic_hz": 100},
        "journal": {"ram_bytes": 1024, "flush_ms": 0, "segment_bytes": 8192, "segments": 8},
        "health": {"wdt_ms": 0, "healthy_s": 5},
        "power": {"sleep_s": 3, "awake_s": 1, "night_hk_s": 1},
    }
    for sect, vals in over.items():
        if isinstance(vals, dict) and isinstance(cfg.get(sect), dict):
            cfg[sect].update(vals)
        else:
            cfg[sect] = vals
    return cfg


class Node:
    """One virtual node: the firmware image on the unix port, its cwd as filesystem."""

    def __init__(self, micropython: str, image: Path, workdir: Path, cfg: dict, heap: str = HEAP) -> None:
        self.micropython = micropython
        self.image = image
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.heap = heap
        (self.dir / "config.json").write_text(json.dumps(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "node.log"
        self.pass_fds: tuple[int, ...] = ()  # inherited by the VM (a UART link's pty, config uart.fd)

    @property
    def env(self) -> dict:
        return dict(os.environ, MICROPYPATH=f".frozen:{self.image}/lib")

    def start(self) -> Node:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.micropython, "-X", f"heapsize={self.heap}", str(self.image / "main.py")],
                cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=self.pass_fds,
            )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


class Ground:
    """Subscribes to lunabase/# (persistent session, QoS 1) and decodes TM as it comes."""

    def __init__(self, port: int, client_id: str = "ground-test") -> None:
        self.parser = Parser()
        self.lock = threading.Lock()
        self.packets: list[tuple[int, int, int, bytes]] = []  # (apid, seq, ticks, raw)
        self.rejected: list = []
        self.status: list[tuple[str, dict, bool]] = []  # (topic, json, retain)
        self.tm_messages = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_message = self._on_message
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("lunabase/#", 1)
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        self.client = c

    def _on_message(self, cl, u, m) -> None:
        with self.lock:
            if m.topic.endswith("/tm"):
                self.tm_messages += 1
                res = self.parser.parse(m.payload)
                self.rejected += list(res.rejected)
                for i in range(res.count):
                    o, n = int(res.offset[i]), int(res.length[i])
                    self.packets.append((int(res.apid[i]), int(res.seq[i]), int(res.ticks[i]), bytes(m.payload[o:o + n])))
            elif m.topic.endswith("/status"):
                self.status.append((m.topic, json.loads(m.payload), bool(m.retain)))

    def send_tc(self, node: str, tc: bytes) -> None:
        self.client.publish(f"lunabase/{SITE}/{node}/cmd", tc, qos=1).wait_for_publish(5)

    def by_apid(self, apid: int) -> list[tuple[int, int, int, bytes]]:
        with self.lock:
            return [p for p in self.packets if p[0] == apid]

    def unique(self) -> dict[int, list[tuple[int, int]]]:
        """(seq, ticks) per APID after de-duplicating on (apid, seq, ticks), in arrival order."""
        seen = set()
        out: dict[int, list[tuple[int, int]]] = {}
        with self.lock:
            for a, s, t, _ in self.packets:
                if (a, s, t) not in seen:
                    seen.add((a, s, t))
                    out.setdefault(a, []).append((s, t))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(pred: Callable[[], object], timeout: float, what: str, node: Node | None = None) -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            log = node.log() if node else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- node log ---\n{log}")
        time.sleep(0.1)


def seq_gaps(seqs: list[int]) -> int:
    """Missing sequence counts in a de-duplicated, sorted-by-time list (14-bit wrap)."""
    gaps = 0
    for a, b in itertools.pairwise(seqs):
        gaps += ((b - a) & ccsds.SEQ_MASK) - 1
    return gaps


@pytest.fixture
def ground(broker) -> Iterator[Ground]:
    g = Ground(broker.port)
    yield g
    g.close()


@pytest.fixture
def make_node(micropython_bin: str, firmware_image: Path, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(cfg: dict, name: str = "node", heap: str = HEAP) -> Node:
        n = Node(micropython_bin, firmware_image, tmp_path / name, cfg, heap)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.kill()


def run_vm(micropython_bin: str, image: Path, code: str, heap: str = HEAP, cwd: Path | None = None, timeout: float = 60) -> str:
    """Run a snippet on the MicroPython VM with the firmware on its path; returns stdout."""
    r = subprocess.run(
        [micropython_bin, "-X", f"heapsize={heap}", "-c", code],
        cwd=cwd, env=dict(os.environ, MICROPYPATH=f".frozen:{image}/lib"),
        capture_output=True, text=True, timeout=timeout,
    )
    if r.returncode:
        raise AssertionError(f"MicroPython failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout

"""pytest plugin `lunabase_hil`: the same HIL suite on a real board or on the virtual board.

    pytest hil/suite                                   # virtual board (MicroPython unix port on a pty)
    pytest hil/suite --hil-port /dev/ttyUSB0 --hil-board esp32 \\
        --hil-wifi-ssid lab --hil-wifi-password ... --hil-host 192.168.1.10

Fixtures (function scope, everything stopped after the test):

- ``board``  a `hil.Board` on the port (``board.virtual`` is the `VirtualBoard` or None)
- ``ground`` a private mosquitto plus `hil.ground.HilGround`: ``send_and_assert_command``,
  ``await_telemetry(predicate, timeout)``, ``await_event``, ``assert_no_alarm``, ``report()``
- ``node``   the node flashed on the board with the firmware and a test config, online;
  fault injection: ``cut_link()``/``restore_link()``, ``light_time(seconds)``, ``reset()``
  (soft), ``power_cycle()`` (brown-out), ``break_sensor(field, 'dead'|'stuck'|'noisy')``,
  ``set_sensor(**values)``; ``expect(pattern)`` on the serial output

The node reaches the broker through a link proxy (``sim.link.LinkProxy``) so links can be
cut and delayed.  A failing test's report gets the board's serial log and the telemetry
the ground saw.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.board import Board
from hil.flash import Broker, flash
from hil.ground import HilGround
from hil.sensorbus import SensorBus
from hil.virtual_board import VirtualBoard

SITE = "hil"
NODE = "hil01"
_ITEMS: dict[str, dict[str, Any]] = {}  # nodeid -> {"board": Board, "ground": HilGround}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("lunabase_hil", "lunabase hardware-in-the-loop")
    g.addoption("--hil-port", default=os.environ.get("LUNABASE_HIL_PORT", ""),
                help="serial port of a real board (default: a virtual board on a pty)")  # fmt: skip
    g.addoption("--hil-baud", type=int, default=115200)
    g.addoption("--hil-board", default="", help="board type of the real board: esp32 | rp2 | sim (default sim)")
    g.addoption("--hil-wifi-ssid", default=os.environ.get("LUNABASE_HIL_WIFI_SSID", ""))
    g.addoption("--hil-wifi-password", default=os.environ.get("LUNABASE_HIL_WIFI_PASSWORD", ""))
    g.addoption("--hil-host", default="",
                help="address of this machine as the board sees it (real boards; default 127.0.0.1)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: hardware-in-the-loop tests (virtual board unless --hil-port is given)")


class _LinkThread:
    """sim.link.LinkProxy on its own event loop thread, controlled from the test."""

    def __init__(self, upstream_port: int, host: str) -> None:
        from sim.link import LinkProxy

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hil link", daemon=True)
        self.thread.start()
        self.proxy = LinkProxy("127.0.0.1", upstream_port, delay=0.0, host=host, name="hil")
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        self.port = self.proxy.port

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class HilNode:
    """The node under test: identity, its board, and fault injection."""

    def __init__(self, board: Board, ground: HilGround, link: _LinkThread, bus: SensorBus | None, cfg: dict[str, Any]):
        self.board = board
        self.ground = ground
        self.link = link
        self.bus = bus
        self.config = cfg
        self.id = cfg["node"]
        self.site = cfg["site"]

    # link
    def cut_link(self) -> None:
        """Drop the node's broker connection and refuse new ones (loss of signal)."""
        self.link.call(self.link.proxy.cut)

    def restore_link(self) -> None:
        self.link.call(self.link.proxy.restore)

    def light_time(self, seconds: float) -> None:
        """One-way delay on the node <-> broker link (1.28 s for the Moon; 0 to remove)."""
        self.link.call(setattr, self.link.proxy, "delay", float(seconds))

    # board
    def reset(self) -> None:
        """Soft reset (Ctrl-D): boot.py + main.py run again."""
        self.board.enter_raw()
        self.board.reset()

    def power_cycle(self) -> None:
        """Brown-out: the virtual board's VM is killed mid-whatever; a real board gets machine.reset()."""
        vb: VirtualBoard | None = getattr(self.board, "virtual", None)
        if vb is not None:
            self.board.repl.in_raw = False
            self.board._expect_pos = len(self.board.log)
            n = vb.reenumerations
            vb.power_cycle()
            if vb.reenumerate:  # like native USB: the port went away and came back
                deadline = time.monotonic() + 20
                while vb.reenumerations == n and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.board.reopen()
        else:
            self.board.hard_reset()  # reopens the port when the board re-enumerates

    # sensors (sim board)
    def _need_bus(self) -> SensorBus:
        if self.bus is None:
            pytest.skip("sensor faults need a sim board (the virtual board, or --hil-board sim)")
        return self.bus

    def break_sensor(self, field: str, kind: str | None = "dead") -> None:
        """Break a sensor field ('dead', 'stuck', 'noisy'; None repairs it)."""
        self._need_bus().fault(field, kind)

    def set_sensor(self, **values: float) -> None:
        """Force sensor readings (engineering units)."""
        self._need_bus().set(**values)

    def expect(self, pattern: bytes | str, timeout: float = 30.0) -> Any:
        """Wait for the node to print `pattern` on its serial console."""
        return self.board.expect(pattern, timeout)


@pytest.fixture
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Board]:
    """The board under test: --hil-port, else a fresh virtual board."""
    port = request.config.getoption("--hil-port")
    log = tmp_path / "serial.log"
    vb = None
    if not port:
        vb = VirtualBoard(tmp_path / "board-fs", heapsize="256K").start()
        port = vb.port
    b = Board.open(port, baudrate=int(request.config.getoption("--hil-baud") or 115200), log_path=log)
    b.virtual = vb
    _ITEMS.setdefault(request.node.nodeid, {})["board"] = b
    try:
        yield b
    finally:
        b.close()
        if vb is not None:
            vb.stop()


@pytest.fixture
def ground(request: pytest.FixtureRequest) -> Iterator[HilGround]:
    """A private mosquitto and the test ground subscribed to it."""
    from sim.mosquitto import Mosquitto

    host = "0.0.0.0" if request.config.getoption("--hil-host") else "127.0.0.1"
    with Mosquitto() as m:
        g = HilGround(m.host, m.port, SITE).start()
        g.broker = m
        g.listen_host = host
        _ITEMS.setdefault(request.node.nodeid, {})["ground"] = g
        try:
            yield g
        finally:
            g.stop()


@pytest.fixture
def hil_inventory(request: pytest.FixtureRequest) -> Any:
    """A fresh inventory (site 'hil', node 'hil01', new keys) for the node under test."""
    from wire.inventory import Inventory

    inv = Inventory.generate(SITE, [NODE], board=request.config.getoption("--hil-board") or "sim")
    inv.ground_password = ""  # the private test broker is anonymous
    return inv


@pytest.fixture
def gds(ground: HilGround, hil_inventory: Any, tmp_path: Path) -> Iterator[Any]:
    """The real ground segment (GroundService) on the test broker; `gds.api` is ground.testing's
    GroundTestAPI made synchronous: await_telemetry(lambda s: s.packet == "HK"),
    send_and_assert_command, await_event(kind=..., node=...), assert_no_alarm; `gds.remote` the
    same over the client interface, logged in as the `hil` account (gds.accounts: passwords)."""
    from hil.gds import GdsThread

    with GdsThread(f"mqtt://127.0.0.1:{ground.port}", hil_inventory, tmp_path / "gds") as g:
        yield g


@pytest.fixture
def node(request: pytest.FixtureRequest, board: Board, ground: HilGround, hil_inventory: Any) -> Iterator[HilNode]:
    """The node running on `board`, flashed with the firmware and a test config, online."""
    opt = request.config.getoption
    kind = opt("--hil-board") or "sim"
    inv = hil_inventory
    n = inv.node(NODE)
    ground.keys[NODE] = n.key
    board_host = opt("--hil-host") or "127.0.0.1"
    link = _LinkThread(ground.port, ground.listen_host)
    bus = SensorBus(ground.listen_host).start() if kind == "sim" else None
    cfg: dict[str, Any] = {
        "node": NODE,
        "site": SITE,
        "board": kind,
        "key": n.key.hex(),
        "broker": {"host": board_host, "port": link.port, "user": NODE, "password": n.password,
                   "backoff_min_ms": 200, "backoff_max_ms": 2000},
        "rates": {"hk_ms": 1000, "power_ms": 2000, "thermal_ms": 2000, "radiation_ms": 2000},
        "health": {"wdt_ms": 0},
    }  # fmt: skip
    if bus is not None:
        cfg["sim"] = {"host": board_host, "port": bus.port}
    if kind != "sim":
        cfg["wifi"] = {"ssid": opt("--hil-wifi-ssid"), "password": opt("--hil-wifi-password")}
    try:
        flash(board, cfg, Broker("127.0.0.1", ground.port), birth_timeout=120, out=_NullOut())
        yield HilNode(board, ground, link, bus, cfg)
    finally:
        try:
            board.enter_raw()  # stop main.py so the board is quiet for the next test
        except Exception:
            pass
        link.stop()
        if bus is not None:
            bus.stop()


class _NullOut:
    def write(self, s: str) -> None:
        pass

    def flush(self) -> None:
        pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    items = _ITEMS.get(item.nodeid)
    if items and rep.failed:
        b: Board | None = items.get("board")
        g: HilGround | None = items.get("ground")
        if b is not None:
            try:
                b.poll()
            except Exception:
                pass
            raw = bytes(b.log[-4000:]).decode(errors="replace")
            tail = "".join(ch if ch in "\n\t" or ord(ch) >= 32 else f"\\x{ord(ch):02x}" for ch in raw)
            rep.sections.append((f"serial log (last 4000 bytes; full: {b.log_path})", tail))
        if g is not None:
            rep.sections.append(("telemetry seen", g.report(last=20)))
    if rep.when == "teardown":
        _ITEMS.pop(item.nodeid, None)

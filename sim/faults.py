"""Fault injection on a running :class:`sim.runner.SimBase`, by hand or on a timeline.

=================  ==========================================================
kind               what happens
=================  ==========================================================
``brownout``       SIGKILL the node's VM at this moment (RAM lost, flash kept);
                   back on after ``off_s`` (default 2 s); ``torn_write = true``
                   also leaves a torn record at the end of its newest journal
                   segment
``reset``          kill and restart the VM at once
``stop``/``start`` stop a node for good / start it again
``sensor``         ``field`` reads ``stuck`` | ``noisy`` | ``dead`` (protocol
                   ``faults``) for ``duration_s`` (0: until cleared with
                   ``mode = "ok"``)
``link_cut``       cut the node's link (drop + refuse) for ``duration_s``
                   (0: until ``link_restore``)
``link_restore``   bring a cut link back
``corrupt``        flip a byte in the payload of the next ``count`` PUBLISH
                   packets of the node (``raw = true``: anywhere in the stream)
``clock_jump``     step the node's clock by ``seconds``
``broker_kill``    SIGKILL the private broker; restarted after ``down_s``
                   (default 5 s; 0: stays down until ``broker_start``)
``broker_restart`` graceful stop + start (persistence saved)
``broker_start``   start a killed broker again
=================  ==========================================================

``node`` selects one node id, a list of ids, or ``"*"`` (all nodes).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.runner import SimBase

log = logging.getLogger("sim.faults")

KINDS = (
    "brownout",
    "reset",
    "stop",
    "start",
    "sensor",
    "link_cut",
    "link_restore",
    "corrupt",
    "clock_jump",
    "broker_kill",
    "broker_restart",
    "broker_start",
)
SENSOR_MODES = ("stuck", "noisy", "dead", "ok")


class FaultError(ValueError):
    """A fault entry is malformed; the message names the entry and the field."""


@dataclass
class Fault:
    """One fault on the timeline: at ``at_s`` real seconds after the start."""

    at_s: float
    kind: str
    node: str | list[str] = "*"
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, raw: dict[str, Any], where: str = "fault") -> Fault:
        raw = dict(raw)
        kind = raw.pop("kind", None)
        if kind not in KINDS:
            raise FaultError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        try:
            at = float(raw.pop("at_s"))
        except KeyError:
            raise FaultError(f"{where}: missing at_s (real seconds after the start)") from None
        node = raw.pop("node", "*")
        if kind == "sensor":
            if "field" not in raw:
                raise FaultError(f"{where}: sensor fault needs field (e.g. \"battery_soc\")")
            if raw.get("mode", "dead") not in SENSOR_MODES:
                raise FaultError(f"{where}: mode must be one of {SENSOR_MODES}")
        if kind == "clock_jump" and "seconds" not in raw:
            raise FaultError(f"{where}: clock_jump needs seconds")
        return cls(at, kind, node, raw)


class Faults:
    """Inject faults into ``base`` (a started SimBase)."""

    def __init__(self, base: SimBase) -> None:
        self.base = base
        self.log: list[tuple[float, str]] = []  # (real s since start, description)
        self._tasks: set[asyncio.Task[None]] = set()

    def _nodes(self, sel: str | list[str]) -> list[str]:
        ids = list(self.base.nodes)
        if sel == "*":
            return ids
        want = [sel] if isinstance(sel, str) else list(sel)
        unknown = [n for n in want if n not in self.base.nodes]
        if unknown:
            raise FaultError(f"unknown node(s) {unknown}; known: {ids}")
        return want

    def _note(self, text: str) -> None:
        self.log.append((self.base.elapsed(), text))
        log.debug("fault: %s", text)
        self.base.emit(f"fault: {text}")

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            fn(*args)

        t = asyncio.get_running_loop().create_task(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- nodes ---------------------------------------------------------------------------
    def brownout(self, node: str, off_s: float = 2.0, torn_write: bool = False) -> None:
        self.base.nodes[node].brownout(torn_write=torn_write)
        self._note(f"{node}: brownout ({off_s:g} s off{', torn write' if torn_write else ''})")
        if off_s > 0:
            self._later(off_s, self.base.nodes[node].power_on)

    def reset(self, node: str) -> None:
        self.base.nodes[node].reset()
        self._note(f"{node}: reset")

    def sensor(self, node: str, field_name: str, mode: str = "dead", duration_s: float = 0.0) -> None:
        self.base.bus.set_fault(node, field_name, None if mode == "ok" else mode)
        self._note(f"{node}: sensor {field_name} {mode}" + (f" for {duration_s:g} s" if duration_s else ""))
        if duration_s and mode != "ok":
            self._later(duration_s, self.base.bus.set_fault, node, field_name, None)

    def _link(self, node: str) -> Any:
        link = self.base.links.get(node)
        if link is None:
            raise ValueError(f"{node}: no link emulator (link.direct = true, or no such node): no link faults")
        return link

    def link_cut(self, node: str, duration_s: float = 0.0) -> None:
        self._link(node).cut()
        self._note(f"{node}: link cut" + (f" for {duration_s:g} s" if duration_s else ""))
        if duration_s:
            self._later(duration_s, self.link_restore, node)

    def link_restore(self, node: str) -> None:
        self._link(node).restore()
        self._note(f"{node}: link restored")

    def corrupt(self, node: str, count: int = 1, raw: bool = False) -> None:
        link = self._link(node)
        (link.corrupt_raw if raw else link.corrupt)(count)
        self._note(f"{node}: corrupt {count} {'chunk(s)' if raw else 'PUBLISH payload(s)'}")

    def clock_jump(self, node: str, seconds: float) -> None:
        self.base.bus.clock_jump(node, seconds)
        self._note(f"{node}: clock jump {seconds:+g} s")

    # -- broker --------------------------------------------------------------------------
    def broker_kill(self, down_s: float = 5.0) -> None:
        b = self.base.broker
        if b is None:
            raise FaultError("broker faults need the simulator's private broker (no --broker URL)")
        b.kill()
        self._note("broker killed" + (f", back in {down_s:g} s" if down_s else ""))
        if down_s:
            self._later(down_s, self.broker_start)

    def broker_start(self) -> None:
        b = self.base.broker
        if b is not None and not b.running:
            b.start()
            self._note("broker started")

    def broker_restart(self) -> None:
        b = self.base.broker
        if b is None:
            raise FaultError("broker faults need the simulator's private broker (no --broker URL)")
        b.restart()
        self._note("broker restarted")

    # -- timeline --------------------------------------------------------------------------
    def apply(self, f: Fault) -> None:
        a = dict(f.args)
        if f.kind.startswith("broker_"):
            if f.kind == "broker_kill":
                self.broker_kill(float(a.get("down_s", 5.0)))
            elif f.kind == "broker_restart":
                self.broker_restart()
            else:
                self.broker_start()
            return
        for n in self._nodes(f.node):
            if f.kind == "brownout":
                self.brownout(n, float(a.get("off_s", 2.0)), bool(a.get("torn_write", False)))
            elif f.kind == "reset":
                self.reset(n)
            elif f.kind == "stop":
                self.base.nodes[n].stop()
                self._note(f"{n}: stopped")
            elif f.kind == "start":
                self.base.nodes[n].start()
                self._note(f"{n}: started")
            elif f.kind == "sensor":
                self.sensor(n, str(a["field"]), str(a.get("mode", "dead")), float(a.get("duration_s", 0)))
            elif f.kind == "link_cut":
                self.link_cut(n, float(a.get("duration_s", 0)))
            elif f.kind == "link_restore":
                self.link_restore(n)
            elif f.kind == "corrupt":
                self.corrupt(n, int(a.get("count", 1)), bool(a.get("raw", False)))
            elif f.kind == "clock_jump":
                self.clock_jump(n, float(a["seconds"]))

    async def run_timeline(self, faults: list[Fault]) -> None:
        """Apply ``faults`` at their times (relative to the base's start) until done or cancelled."""
        for f in sorted(faults, key=lambda f: f.at_s):
            wait = f.at_s - self.base.elapsed()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                self.apply(f)
            except Exception as e:  # a bad entry must not stop the run
                self._note(f"could not apply {f.kind}: {e}")

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

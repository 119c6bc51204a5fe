"""A small synchronous ground for HIL tests, in the spirit of F Prime GDS's test API.

    g = HilGround("127.0.0.1", broker.port, site, keys={"n01": key}).start()
    g.await_telemetry(lambda s: s.node == "n01" and s.packet == "HK" and s["uptime"] >= 2, timeout=30)
    g.send_and_assert_command("n01", "PING")                  # ACK stage EXECUTED within the timeout
    g.await_event(name="BOOT", node="n01")
    g.assert_no_alarm(node="n01")                              # no red limit violated so far
    print(g.report())                                          # what was seen (used in failure reports)

It subscribes to every node of the site (tm + status), decodes TM with ``ground.parse``
(the project's reference parser) and signs TCs with ``wire.ccsds.build_tc``.  It is a
test instrument: history is kept in memory, every sample with the time it arrived.
Predicates, samples and the timeout are the ones of every test API (``ground.testing``:
``TelemetryPredicate``, ``Sample``, ``AssertionTimeout``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ground.testing import AssertionTimeout, Sample, TelemetryPredicate
from wire import ccsds, timetag, topics

__all__ = ["HilGround", "Sample", "TelemetryTimeout"]

#: the one timeout of the F Prime-style test APIs (ground.testing.GroundTestAPI raises it too)
TelemetryTimeout = AssertionTimeout


class HilGround:
    """Subscriber + decoder + commander on one broker; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        site: str,
        keys: dict[str, bytes] | None = None,
        user: str = "",
        password: str = "",
    ) -> None:
        from wire.dictionary import load

        self.host, self.port, self.site = host, port, site
        self.keys = dict(keys or {})
        self.user, self.password = user, password
        self.dictionary = load()
        self.samples: list[Sample] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.status_history: list[tuple[str, dict[str, Any]]] = []
        self.rejected: Counter[str] = Counter()
        self.messages = 0
        self._cond = threading.Condition()
        self._client: Any = None
        self._counter = 0
        self._tc_seq: dict[str, int] = {}
        self._parser: Any = None
        self._connected = threading.Event()
        self.broker: Any = None  # the Mosquitto behind it, when a fixture started one
        self.listen_host = "127.0.0.1"  # where proxies for the board listen

    # --- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> HilGround:
        """Connect and subscribe; returns self."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from ground.parse import PyParser

        self._parser = PyParser()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hil-ground-{time.time_ns() % 10**12}")
        if self.user:
            c.username_pw_set(self.user, self.password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        self._client = c
        if not self._connected.wait(timeout):
            self.stop()
            raise TimeoutError(f"ground: no connection to the broker {self.host}:{self.port} in {timeout:g} s")
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def __enter__(self) -> HilGround:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        c.subscribe(topics.topic(self.site, "+", topics.TM), qos=1)
        c.subscribe(topics.topic(self.site, "+", topics.STATUS), qos=1)
        self._connected.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        parts = topics.split(msg.topic)
        if parts is None:
            return
        _, node, kind = parts
        if kind == topics.STATUS:
            try:
                st = json.loads(msg.payload)
            except ValueError:
                self.rejected["bad status json"] += 1
                return
            with self._cond:
                self.status[node] = st
                self.status_history.append((node, st))
                self._cond.notify_all()
            return
        if kind != topics.TM:
            return
        res = self._parser.parse(bytes(msg.payload))
        new: list[tuple[int, Sample]] = []
        for apid, table in res.tables.items():
            p = self.dictionary.packet(apid)
            enums = {f.name: f.enum for f in p.fields if f.enum}
            for i in range(len(table)):
                row = int(table.rows[i])
                vals: dict[str, Any] = {}
                for j, col in enumerate(table.columns):
                    v = float(table.values[i, j])
                    vals[col] = enums[col].get(int(v), int(v)) if col in enums else v
                for name, texts in table.texts.items():
                    vals[name] = texts[i].decode(errors="replace")
                if p.samples is not None and table.raw_samples is not None:
                    vals["samples"] = table.raw_samples[i] * table.sample_scale
                new.append((row, Sample(node, p.name, apid, int(res.seq[row]), vals)))
        new.sort(key=lambda t: t[0])
        with self._cond:
            self.messages += 1
            for r in res.rejected:
                self.rejected[r.reason] += 1
            self.samples.extend(s for _, s in new)
            self._cond.notify_all()

    # --- waiting --------------------------------------------------------------------
    def _wait_for(self, find: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = find()
                if got is not None:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TelemetryTimeout(f"{what()} within {timeout:g} s\n{self.report()}")
                self._cond.wait(min(left, 0.5))

    def await_telemetry(
        self, predicate: TelemetryPredicate, timeout: float = 30.0, since: float | None = None
    ) -> Sample:
        """The first sample (received after monotonic time `since`, default: any) matching `predicate`."""
        start = [0]

        def find() -> Sample | None:
            for k in range(start[0], len(self.samples)):
                s = self.samples[k]
                if (since is None or s.received >= since) and predicate(s):
                    return s
            start[0] = len(self.samples)
            return None

        return self._wait_for(find, timeout, lambda: "no telemetry matched the predicate")

    def await_event(
        self,
        name: str | None = None,
        node: str | None = None,
        severity: str | None = None,
        predicate: TelemetryPredicate | None = None,
        timeout: float = 30.0,
        since: float | None = None,
    ) -> Sample:
        """The first EVENT packet matching code name / node / severity / predicate."""
        return self.await_telemetry(
            lambda s: s.packet == "EVENT"
            and (name is None or s["code"] == name)
            and (node is None or s.node == node)
            and (severity is None or s["severity"] == severity)
            and (predicate is None or predicate(s)),
            timeout,
            since,
        )

    def await_status(self, node: str, state: str = "online", timeout: float = 30.0, since_index: int = 0) -> dict[str, Any]:
        """The first status of `node` with `state` (from status_history[since_index:])."""

        def find() -> dict[str, Any] | None:
            for n, st in self.status_history[since_index:]:
                if n == node and st.get("state") == state:
                    return st
            return None

        return self._wait_for(find, timeout, lambda: f"{node}: no status {state!r}")

    # --- commanding -----------------------------------------------------------------
    def send_command(self, node: str, name: str, args: dict[str, Any] | None = None, key: bytes | None = None) -> int:
        """Sign and publish a telecommand; returns its counter (the ACKs carry it)."""
        cmd = self.dictionary.command(name)
        key = key if key is not None else self.keys.get(node)
        if key is None:
            raise KeyError(f"no telecommand key for node {node!r}")
        self._counter = max(self._counter + 1, int(time.time()))
        seq = self._tc_seq.get(node, 0)
        self._tc_seq[node] = (seq + 1) & ccsds.SEQ_MASK
        coarse, fine = timetag.split(timetag.unix_to_node(time.time()))
        tc = ccsds.build_tc(
            key, node.encode(), self.dictionary.tc_apid, seq, cmd.opcode, self._counter,
            cmd.pack_args(**(args or {})), coarse, fine,
        )  # fmt: skip
        self._client.publish(topics.topic(self.site, node, topics.CMD), tc, qos=1)
        return self._counter

    def send_and_assert_command(
        self,
        node: str,
        name: str,
        args: dict[str, Any] | None = None,
        timeout: float = 30.0,
        expect: str = "EXECUTED",
        key: bytes | None = None,
    ) -> Sample:
        """Send `name` and assert its ACK reaches stage `expect` (EXECUTED, REJECTED...) in time.

        Returns the matching ACK sample; fails fast on a REJECTED/FAILED ACK when not expected."""
        counter = self.send_command(node, name, args, key)

        def find() -> Sample | None:
            for s in self.samples:
                if s.node == node and s.packet == "ACK" and int(s["tc_counter"]) == counter:
                    if s["stage"] == expect:
                        return s
                    if s["stage"] in ("REJECTED", "FAILED") and expect not in ("REJECTED", "FAILED"):
                        raise AssertionError(f"{name} on {node}: {s['stage']} ({s['reason']}), expected {expect}\n{self.report()}")
            return None

        def what() -> str:
            acks = [s for s in self.samples if s.packet == "ACK" and s.node == node and int(s["tc_counter"]) == counter]
            return f"{name} #{counter} on {node}: no ACK {expect} (ACKs seen: {acks})"

        return self._wait_for(find, timeout, what)

    # --- checks ---------------------------------------------------------------------
    def alarms(self, node: str | None = None, level: str = "red", since: float | None = None) -> list[str]:
        """Limit violations in the samples seen: 'node PACKET.field=value outside [lo, hi]'."""
        out = []
        for s in list(self.samples):
            if (node and s.node != node) or (since is not None and s.received < since):
                continue
            p = self.dictionary.packet(s.apid)
            for f in p.fields:
                lim = getattr(f, level, None)
                v = s.values.get(f.name)
                if lim and isinstance(v, float) and not lim[0] <= v <= lim[1]:
                    out.append(f"{s.node} {p.name}.{f.name}={v:g} outside [{lim[0]:g}, {lim[1]:g}] (#{s.seq})")
        return out

    def assert_no_alarm(self, node: str | None = None, level: str = "red", since: float | None = None) -> None:
        """AssertionError listing every `level` limit violation seen (optionally for one node)."""
        bad = self.alarms(node, level, since)
        if bad:
            raise AssertionError(f"{len(bad)} {level} limit violations:\n  " + "\n  ".join(bad[:30]))

    def report(self, last: int = 12) -> str:
        """What the ground saw: statuses, counts per packet, the last samples, rejected bytes."""
        with self._cond:
            counts = Counter((s.node, s.packet) for s in self.samples)
            lines = [f"telemetry seen on {self.host}:{self.port} (site {self.site}): {len(self.samples)} packets in {self.messages} messages"]
            for node, st in sorted(self.status.items()):
                lines.append(f"  status {node}: {st}")
            for (node, pkt), n in sorted(counts.items()):
                lines.append(f"  {node} {pkt}: {n}")
            if self.rejected:
                lines.append(f"  rejected: {dict(self.rejected)}")
            for s in self.samples[-last:]:
                lines.append(f"  {s!r}"[:300])
            return "\n".join(lines)

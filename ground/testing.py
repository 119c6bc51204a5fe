"""Test doubles and an F Prime GDS-style test API for the ground operations layer.

Importable without a running ground or console::

    from ground.testing import GroundTestAPI, FakeNode, make_packet, parse_packets

- ``make_packet`` / ``parse_packets``: TM packets built with ``wire.ccsds.PacketBuffer``
  from engineering values, and the ParseResult ingest would produce for them.
- ``FakeNode``: a small MQTT node that checks every TC with ``wire.ccsds.open_tc`` and
  answers ACK packets (ACCEPTED then EXECUTED, or REJECTED with the reason).
- ``GroundTestAPI``: ``send_and_assert_command``, ``await_telemetry``, ``await_event``,
  ``assert_no_alarm`` over an in-process ``Operations``; ``RemoteGroundTestAPI`` the same
  over the client interface.  With ``hil.ground.HilGround`` (and ``hil.gds.GdsThread``,
  which wraps these two) they share one telemetry predicate, ``TelemetryPredicate``: a
  function of one ``Sample`` (``s.node``, ``s.packet``, ``s["field"]``) returning a bool;
  ``await_telemetry`` returns the matching ``Sample``.  A wait that runs out raises
  ``AssertionTimeout`` (an ``AssertionError``) in all of them, its message saying what
  was seen.
- ``add_test_accounts``: one account per role (``viewer``, ``operator``, ``commander``,
  ``commander2``, ``admin``, all with ``TEST_PASSWORD``) in a ground's ``AccountStore``,
  so tests log in like every client instead of weakening the server.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ground.client_types import CommandRow
from ground.parse import ParseResult, PyParser
from wire import ccsds, defs, timetag, topics
from wire.dictionary import Dictionary, load

_seqs: dict[tuple[str, int], int] = {}

TEST_PASSWORD = "lunabase-test-pw"
TEST_ACCOUNTS = {"viewer": ["viewer"], "operator": ["operator"], "commander": ["commander"],
                 "commander2": ["commander"], "admin": ["admin"]}


def test_auth(accounts: dict[str, list[str]] | None = None) -> Any:
    """An ``ground.auth.Auth`` over an in-memory store holding the test accounts (for ``ApiServer``)."""
    from ground.auth import AccountStore, Auth

    store = AccountStore()
    add_test_accounts(store, accounts)
    return Auth(store)


setattr(test_auth, "__test__", False)  # noqa: B010 - a helper, not a pytest test


def add_test_accounts(store: Any, accounts: dict[str, list[str]] | None = None,
                      password: str = TEST_PASSWORD) -> dict[str, str]:
    """Add test accounts (name -> roles; default ``TEST_ACCOUNTS``) to an ``AccountStore``.

    Hashes use a cheap scrypt cost (tests only: the cost is stored with each hash, so the
    server checks them the normal way).  Returns name -> password.
    """
    store.scrypt_n = 2 ** 10
    out = {}
    for name, roles in (accounts or TEST_ACCOUNTS).items():
        if name not in store.users:
            store.add(name, password, roles, by="test-fixture")
        out[name] = password
    return out


def make_packet(packet: str | int, seq: int | None = None, t: float | None = None, *,
                node: str = "n01", dictionary: Dictionary | None = None, samples: np.ndarray | None = None,
                **values: Any) -> bytes:
    """One TM packet from *engineering* values by field name (others 0); ``t`` = unix time.

    ``seq`` defaults to a per-(node, APID) counter; bytes fields take str or bytes.
    """
    d = dictionary or load()
    p = d.packet(packet)
    pb = ccsds.PacketBuffer(p.apid, p.length)
    if seq is None:
        seq = _seqs.get((node, p.apid), 0)
        _seqs[(node, p.apid)] = (seq + 1) & ccsds.SEQ_MASK
    pb.seq = seq
    for f in p.fields:
        v = values.get(f.name, 0 if f.is_numeric else b"")
        if not f.is_numeric:
            v = v.encode() if isinstance(v, str) else v
        elif f.enum is not None and isinstance(v, str):
            v = {n: k for k, n in f.enum.items()}[v]
        elif f.type != "f32":
            v = f.to_raw(v)
        struct.pack_into(">" + f.struct_code, pb.buf, f.offset, v)
    if p.samples is not None and samples is not None:
        raw = np.round(np.asarray(samples) / p.samples.scale).astype(">i2")
        pb.buf[p.samples.offset:p.samples.offset + p.samples.size] = raw.tobytes()
    return bytes(pb.finish(*timetag.split(timetag.unix_to_node(time.time() if t is None else t))))


def parse_packets(*packets: bytes) -> tuple[ParseResult, bytes]:
    """(ParseResult, payload) for packets sent back to back in one message."""
    payload = b"".join(packets)
    return PyParser().parse(payload), payload


# open_tc status -> ACK reason, as firmware/lunanode/telecommand.py maps them
_TC_REASON = {ccsds.TC_BAD_MAC: defs.ACK_REASON_BAD_MAC, ccsds.TC_REPLAY: defs.ACK_REASON_REPLAY,
              ccsds.TC_BAD_LENGTH: defs.ACK_REASON_BAD_LENGTH, ccsds.TC_EXPIRED: defs.ACK_REASON_EXPIRED,
              ccsds.TC_WRONG_NODE: defs.ACK_REASON_WRONG_NODE, ccsds.TC_NOT_YET_VALID: defs.ACK_REASON_NOT_YET_VALID}


class FakeNode:
    """A Python stand-in for a node on a real broker: verifies TCs, answers ACKs.

    ``behaviour``: "ack" (ACCEPTED then EXECUTED), "reject" (REJECTED with the open_tc
    reason or BAD_OPCODE), "fail" (ACCEPTED then FAILED), "silent" (never answers),
    "accept_only" (ACCEPTED, never EXECUTED).  ``received`` lists (status, opcode,
    counter, args) of every TC; ``last_counter`` persists like the node's NVS would.
    """

    def __init__(self, host: str, port: int, site: str, node: str, key: bytes, *,
                 behaviour: str = "ack", light_time: float = 0.0, username: str | None = None,
                 password: str | None = None) -> None:
        self.host, self.port, self.site, self.node, self.key = host, port, site, node, key
        self.behaviour = behaviour
        self.light_time = light_time
        self.username, self.password = username, password
        self.received: list[tuple[int, int, int, bytes]] = []
        self.custody: list[bytes] = []  # custody acknowledgements from the ground (not TCs)
        self.last_counter = 0
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._ack = ccsds.PacketBuffer(defs.APID_ACK, load().packet("ACK").length)
        self._ready = asyncio.Event()

    async def __aenter__(self) -> FakeNode:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def publish_tm(self, *packets: bytes) -> None:
        await self._client.publish(topics.topic(self.site, self.node, topics.TM), b"".join(packets), qos=1)

    async def publish_status(self, state: str, **kw: Any) -> None:
        st = {"state": state, "mode": kw.pop("mode", "DAY"), "boot": kw.pop("boot", 1),
              "next_contact": kw.pop("next_contact", 0), "hk_period": kw.pop("hk_period", 1), **kw}
        await self._client.publish(topics.topic(self.site, self.node, topics.STATUS), json.dumps(st), qos=1, retain=True)

    def _ack_packet(self, counter: int, opcode: int, stage: int, reason: int, seq: int) -> bytes:
        struct.pack_into(">IBBBBH", self._ack.buf, 12, counter, opcode, stage, reason, 0, seq)
        return bytes(self._ack.finish(*timetag.split(timetag.unix_to_node(time.time()))))

    async def _run(self) -> None:
        import aiomqtt

        async with aiomqtt.Client(self.host, self.port, identifier=f"fake-{self.node}",
                                  username=self.username, password=self.password) as c:
            self._client = c
            await c.subscribe(topics.topic(self.site, self.node, topics.CMD), qos=1)
            self._ready.set()
            async for msg in c.messages:
                buf = bytes(msg.payload)  # type: ignore[arg-type]
                if len(buf) >= ccsds.HEADER_LEN and ccsds.peek(buf)[1] == ccsds.CUSTODY_APID:
                    # a custody acknowledgement: a real node checks it against a counter of its
                    # own and answers nothing (firmware/lunanode/telecommand.py); it is no TC
                    self.custody.append(buf)
                    continue
                now = int(timetag.unix_to_node(time.time()))
                st, opcode, counter, a0, a1, seq = ccsds.open_tc(self.key, self.node.encode(), buf, self.last_counter, now)
                self.received.append((st, opcode, counter, buf[a0:a1]))
                if self.behaviour == "silent":
                    continue
                if self.light_time:
                    await asyncio.sleep(self.light_time * 2)
                if st != ccsds.TC_OK:
                    if st in (ccsds.TC_EXPIRED, ccsds.TC_NOT_YET_VALID):
                        self.last_counter = counter  # authentic and fresh: consumed, like the node
                    await self.publish_tm(self._ack_packet(counter, opcode, defs.ACK_STAGE_REJECTED,
                                                                  _TC_REASON.get(st, defs.ACK_REASON_BAD_LENGTH), seq))
                    continue
                self.last_counter = counter
                if self.behaviour == "reject":
                    await self.publish_tm(self._ack_packet(counter, opcode, defs.ACK_STAGE_REJECTED,
                                                                  defs.ACK_REASON_BAD_OPCODE, seq))
                    continue
                await self.publish_tm(self._ack_packet(counter, opcode, defs.ACK_STAGE_ACCEPTED, defs.ACK_REASON_OK, seq))
                if self.behaviour == "ack":
                    await self.publish_tm(self._ack_packet(counter, opcode, defs.ACK_STAGE_EXECUTED, defs.ACK_REASON_OK, seq))
                elif self.behaviour == "fail":
                    await self.publish_tm(self._ack_packet(counter, opcode, defs.ACK_STAGE_FAILED,
                                                                  defs.ACK_REASON_EXEC_ERROR, seq))


class AssertionTimeout(AssertionError):
    """An await_* helper did not see what it waited for; the message says what it saw.

    The one timeout of every test API (``GroundTestAPI``, ``RemoteGroundTestAPI``,
    ``hil.ground.HilGround``, ``hil.gds.GdsThread``)."""


@dataclass
class Sample:
    """One packet's values as the test APIs hand them to a predicate and return them.

    ``s["field"]`` reads a value.  ``apid`` and ``seq`` are -1 where the source does not
    carry them (the ground's telemetry listeners and live feed see values, not counts).
    """

    node: str
    packet: str
    apid: int
    seq: int
    values: dict[str, Any]
    received: float = field(default_factory=time.monotonic)  # time.monotonic() on arrival

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __repr__(self) -> str:
        vals = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}=<{getattr(v, 'shape', '?')} array>" if k == "samples" else f"{k}={v!r}"
            for k, v in self.values.items()
        )
        return f"<{self.node} {self.packet} #{self.seq}: {vals}>"


#: the one telemetry predicate of every test API: true for the sample waited for
TelemetryPredicate = Callable[[Sample], bool]


def _sample(node: str, packet: str, values: dict[str, Any]) -> Sample:
    """A Sample of the ground's values (APID from the dictionary; no sequence count)."""
    try:
        apid = load().packet(packet).apid
    except KeyError:
        apid = -1
    return Sample(node, packet, apid, -1, dict(values))


class GroundTestAPI:
    """F Prime GDS-style helpers over an in-process ``ground.ops.Operations``."""

    def __init__(self, ops: Any) -> None:
        self.ops = ops

    async def send_and_assert_command(self, node: str, name: str, args: dict[str, Any] | None = None,
                                      timeout: float = 10.0, *, expect: str = "EXECUTED",
                                      confirm: bool = False, user: str = "test") -> dict[str, Any]:
        """Send a command and assert it reaches ``expect`` (default EXECUTED) in ``timeout``."""
        row = await self.ops.commander.submit(node, name, args or {}, user=user, confirm=confirm)
        try:
            done = await self.ops.commander.wait(row["id"], timeout)
        except TimeoutError:
            now = self.ops.commander.get(row["id"])
            raise AssertionTimeout(f"{name} #{row['id']} on {node}: still {now['stage']} after {timeout} s "
                                   f"(history {now['history']})") from None
        if done["stage"] != expect:
            raise AssertionError(f"{name} #{row['id']} on {node}: {done['stage']} ({done['reason']}), expected {expect}")
        return done

    async def await_telemetry(self, predicate: TelemetryPredicate, timeout: float = 10.0) -> Sample:
        """The first sample from now on for which ``predicate`` is true."""
        fut: asyncio.Future[Sample] = asyncio.get_running_loop().create_future()
        seen = [0]

        def fn(node: str, packet: str, values: dict[str, float], t: float) -> None:
            seen[0] += 1
            if fut.done():
                return
            s = _sample(node, packet, values)
            if predicate(s):
                fut.set_result(s)

        self.ops.telemetry_listeners.append(fn)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise AssertionTimeout(f"no matching telemetry in {timeout} s ({seen[0]} samples seen)") from None
        finally:
            self.ops.telemetry_listeners.remove(fn)

    async def await_event(self, predicate: Callable[[dict[str, Any]], bool] | None = None, *,
                          kind: str | None = None, node: str | None = None, contains: str | None = None,
                          timeout: float = 10.0) -> dict[str, Any]:
        """The first new event matching kind/node/text and ``predicate``."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def fn(e: dict[str, Any]) -> None:
            if fut.done() or (kind and e["kind"] != kind) or (node and e["node"] != node):
                return
            if contains and contains not in e["message"]:
                return
            if predicate is None or predicate(e):
                fut.set_result(e)

        self.ops.store.listeners.append(fn)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            recent = [e["message"] for e in self.ops.store.events(limit=5)]
            raise AssertionTimeout(f"no matching event in {timeout} s; latest: {recent}") from None
        finally:
            self.ops.store.listeners.remove(fn)

    def assert_no_alarm(self, node: str | None = None, param: str | None = None,
                        severity: str | None = None) -> None:
        """Fail if an open alarm matches (``param`` = "PACKET.field" or "field")."""
        for a in self.ops.alarms.active(include_shelved=True):
            if node and a["node"] != node:
                continue
            if param and param not in (a["field"], f"{a['packet']}.{a['field']}"):
                continue
            if severity and a["severity"] != severity:
                continue
            raise AssertionError(f"open alarm #{a['id']}: {a['node']} {a['packet']}.{a['field']} "
                                 f"{a['severity']} {a['state']} value {a['value']}")


class RemoteGroundTestAPI:
    """The same helpers over a ground running elsewhere, through its client interface.

    ``await_telemetry`` sees the ground's decimated live values (≤ 5 Hz per node, latest
    values per packet), not every sample: predicates should test a state, not a sample.
    ``assert_no_alarm`` is a coroutine here.
    """

    def __init__(self, url: str, user: str | None = None, password: str | None = None, *,
                 token: str | None = None, ca: str | None = None) -> None:
        from ground.client import GroundClient

        self.client = GroundClient(url, user=user, password=password, token=token, ca=ca)

    async def close(self) -> None:
        await self.client.close()

    async def send_and_assert_command(self, node: str, name: str, args: dict[str, Any] | None = None,
                                      timeout: float = 10.0, *, expect: str = "EXECUTED",
                                      confirm: bool = False) -> CommandRow:
        row = await self.client.send_command(node, name, args or {}, confirm=confirm)
        deadline = time.monotonic() + timeout
        pending = ("AWAITING_APPROVAL", "QUEUED", "HELD", "SENT", "ACCEPTED")
        while row["stage"] in pending and time.monotonic() < deadline:
            row = await self.client.command(row["id"], wait=max(0.1, min(5.0, deadline - time.monotonic())))
        if row["stage"] in pending and expect != row["stage"]:
            raise AssertionTimeout(f"{name} #{row['id']} on {node}: still {row['stage']} after {timeout} s "
                                   f"(history {row['history']})")
        if row["stage"] != expect:
            raise AssertionError(f"{name} #{row['id']} on {node}: {row['stage']} ({row['reason']}), expected {expect}")
        return row

    async def _live(self, match: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        agen = self.client.live()

        async def go() -> Any:
            async for m in agen:
                r = match(m)
                if r is not None:
                    return r

        try:
            return await asyncio.wait_for(go(), timeout)
        except TimeoutError:
            raise AssertionTimeout(f"no matching {what} in {timeout} s") from None
        finally:
            await agen.aclose()

    async def await_telemetry(self, predicate: TelemetryPredicate, timeout: float = 10.0) -> Sample:
        def match(m: dict[str, Any]) -> Any:
            if m["type"] == "param":
                for p, e in m["packets"].items():
                    s = _sample(m["node"], p, e["values"])
                    if predicate(s):
                        return s
            return None

        return await self._live(match, timeout, "telemetry")

    async def await_event(self, predicate: Callable[[dict[str, Any]], bool] | None = None, *,
                          kind: str | None = None, node: str | None = None, contains: str | None = None,
                          timeout: float = 10.0) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> Any:
            if m["type"] != "event" or (kind and m["kind"] != kind) or (node and m["node"] != node):
                return None
            if contains and contains not in m["message"]:
                return None
            return m if predicate is None or predicate(m) else None

        return await self._live(match, timeout, "event")

    async def assert_no_alarm(self, node: str | None = None, param: str | None = None,
                              severity: str | None = None) -> None:
        for a in await self.client.alarms():
            if (node and a["node"] != node) or (severity and a["severity"] != severity):
                continue
            if param and param not in (a["field"], f"{a['packet']}.{a['field']}"):
                continue
            raise AssertionError(f"open alarm #{a['id']}: {a['node']} {a['packet']}.{a['field']} {a['severity']}")

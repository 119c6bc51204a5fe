"""Commanding without a broker: signing, counters across restart, windows, timeouts, ACK stages."""

from __future__ import annotations

import struct

import pytest

from ground.ops import Commander, CommandError, OpsStore
from ground.testing import make_packet, parse_packets
from wire import ccsds
from wire.ccsds import EPOCH_UNIX as EPOCH_2000
from wire.dictionary import load
from wire.inventory import Inventory

T0 = 1_800_000_000.0
NOW = int(T0 - EPOCH_2000)  # the node clock, in wire-epoch seconds


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def inv():
    return Inventory.generate("moon", ["n01", "n02"])


def make(inv, store, clock, reach=None, **kw):
    sent: list[tuple[str, bytes]] = []

    async def publish(topic, payload):
        sent.append((topic, payload))

    reach = reach if reach is not None else {"n01": True, "n02": True}
    c = Commander(inv, store, publish, reachable=lambda n: reach[n], clock=clock, **kw)
    return c, sent


def acks(*rows):
    """An ACK Table: rows of (counter, stage, reason)."""
    res, _ = parse_packets(*(make_packet("ACK", tc_counter=c, stage=s, reason=r) for c, s, r in rows))
    return res.tables[7]


async def test_signed_with_node_key_and_counters_increase(inv, tmp_path):
    store = OpsStore(tmp_path / "ops.db")
    cmd, sent = make(inv, store, Clock())
    a = await cmd.submit("n01", "SET_RATE", {"sensor": "SEISMIC", "period_ms": 10}, user="alice")
    b = await cmd.submit("n01", "PING")
    assert a["stage"] == b["stage"] == "SENT"
    assert [t for t, _ in sent] == ["lunabase/moon/n01/cmd"] * 2
    key = inv.node("n01").key
    st, op, ctr, a0, a1, seq = ccsds.open_tc(key, b"n01", sent[0][1], 0, NOW)
    assert st == ccsds.TC_OK and op == 2 and ctr == a["counter"]
    assert load().command("SET_RATE").unpack_args(sent[0][1][a0:a1]) == {"sensor": 5, "period_ms": 10}
    assert ccsds.open_tc(key, b"n01", sent[1][1], ctr, NOW)[0] == ccsds.TC_OK  # strictly increasing
    assert ccsds.open_tc(inv.node("n02").key, b"n01", sent[0][1], 0, NOW)[0] == ccsds.TC_BAD_MAC
    assert ccsds.open_tc(key, b"n02", sent[0][1], 0, NOW)[0] == ccsds.TC_WRONG_NODE
    assert struct.unpack_from(">II", sent[0][1], 18) == (0, 0)  # no window given: unbounded on the node too
    assert b["counter"] > a["counter"] >= int(T0 - EPOCH_2000)
    row = cmd.get(a["id"])
    assert row["user"] == "alice" and [h[0] for h in row["history"]] == ["QUEUED", "SENT"]


async def test_counter_monotonic_across_restart_even_if_clock_goes_back(inv, tmp_path):
    store = OpsStore(tmp_path / "ops.db")
    cmd, _ = make(inv, store, Clock())
    counters = [(await cmd.submit("n01", "PING"))["counter"] for _ in range(5)]
    store.close()
    store2 = OpsStore(tmp_path / "ops.db")
    cmd2, sent = make(inv, store2, Clock(T0 - 86400))  # ground clock set back a day
    c = await cmd2.submit("n01", "PING")
    assert c["counter"] > max(counters) and counters == sorted(set(counters))
    assert ccsds.open_tc(inv.node("n01").key, b"n01", sent[0][1], max(counters), NOW)[0] == ccsds.TC_OK


async def test_refusals(inv):
    cmd, sent = make(inv, OpsStore(), Clock())
    with pytest.raises(CommandError, match="hazardous"):
        await cmd.submit("n01", "SET_MODE", {"mode": "SAFE", "duration_s": 0})
    with pytest.raises(CommandError, match="not one of"):
        await cmd.submit("n01", "SET_MODE", {"mode": "PARTY", "duration_s": 0}, confirm=True)
    with pytest.raises(CommandError, match="missing"):
        await cmd.submit("n01", "SET_RATE", {"sensor": "HK"})
    with pytest.raises(CommandError, match="no node"):
        await cmd.submit("n99", "PING")
    with pytest.raises(CommandError, match="unknown command"):
        await cmd.submit("n01", "SELF_DESTRUCT")
    assert sent == []
    ok = await cmd.submit("n01", "SET_MODE", {"mode": "SAFE", "duration_s": 0}, confirm=True)
    assert ok["confirmed"] and ok["hazardous"]


async def test_queue_until_contact_then_release(inv):
    clock, reach = Clock(), {"n01": False, "n02": True}
    cmd, sent = make(inv, OpsStore(), clock, reach)
    c = await cmd.submit("n01", "PING", not_after=T0 + 600)
    assert c["stage"] == "QUEUED"
    clock.t += 300
    await cmd.pump()
    assert cmd.get(c["id"])["stage"] == "QUEUED" and sent == []
    reach["n01"] = True  # node came back (status online or fresh packets)
    await cmd.pump()
    assert cmd.get(c["id"])["stage"] == "SENT" and len(sent) == 1


async def test_not_before_and_expiry(inv):
    clock, reach = Clock(), {"n01": True, "n02": False}
    cmd, sent = make(inv, OpsStore(), clock, reach)
    early = await cmd.submit("n01", "PING", not_before=T0 + 60)
    late = await cmd.submit("n02", "PING", not_before=T0 + 10, not_after=T0 + 120)
    assert early["stage"] == late["stage"] == "QUEUED"
    clock.t = T0 + 61
    await cmd.pump()
    assert cmd.get(early["id"])["stage"] == "SENT"
    clock.t = T0 + 121
    await cmd.pump()
    gone = cmd.get(late["id"])
    assert gone["stage"] == "EXPIRED" and "validity window" in gone["reason"]
    assert len(sent) == 1
    ev = cmd.store.events(kind="command")[0]
    assert "EXPIRED" in ev["message"] and ev["severity"] == "WARNING"
    with pytest.raises(CommandError):
        await cmd.submit("n01", "PING", not_before=T0 + 10, not_after=T0)


async def test_timeouts_include_round_trip_light_time(inv):
    clock = Clock()
    cmd, _ = make(inv, OpsStore(), clock, light_time=1.28, ack_timeout=1.0, exec_timeout=4.0)
    a = await cmd.submit("n01", "PING")
    clock.t = T0 + 3.5  # < 1.0 + 2.56
    await cmd.pump()
    assert cmd.get(a["id"])["stage"] == "SENT"
    clock.t = T0 + 3.6
    await cmd.pump()
    r = cmd.get(a["id"])
    assert r["stage"] == "TIMED_OUT" and "light time" in r["reason"]
    # accepted, but no EXECUTED within exec_timeout + round trip
    clock.t = T0 + 10
    b = await cmd.submit("n01", "PING")
    cmd.on_ack("n01", acks((b["counter"], 0, 0)))
    assert cmd.get(b["id"])["stage"] == "ACCEPTED"
    clock.t = T0 + 10 + 6.5
    await cmd.pump()
    assert cmd.get(b["id"])["stage"] == "ACCEPTED"
    clock.t = T0 + 10 + 6.6
    await cmd.pump()
    assert cmd.get(b["id"])["stage"] == "TIMED_OUT"
    # the node ran it after all (asleep past the timeout): the late ACK is in the history
    seen = []
    cmd.listeners.append(seen.append)
    clock.t = T0 + 40
    cmd.on_ack("n01", acks((b["counter"], 2, 0)))
    r = cmd.get(b["id"])
    assert r["stage"] == "TIMED_OUT"  # final stays final
    assert r["history"][-1][:2] == ["LATE_EXECUTED", T0 + 40] and "after TIMED_OUT" in r["history"][-1][2]
    assert seen and seen[-1]["history"][-1][0] == "LATE_EXECUTED"
    assert cmd.store.commands(cid=b["id"])[0]["history"][-1][0] == "LATE_EXECUTED"  # stored
    ev = cmd.store.events(kind="command")[0]
    assert "LATE_EXECUTED" in ev["message"] and ev["severity"] == "WARNING"
    # a command the node already answered: a redelivered ACK is no late stage
    c = await cmd.submit("n01", "PING")
    cmd.on_ack("n01", acks((c["counter"], 0, 0), (c["counter"], 2, 0)))
    assert cmd.get(c["id"])["stage"] == "EXECUTED"
    cmd.on_ack("n01", acks((c["counter"], 0, 0), (c["counter"], 2, 0)))
    assert [h[0] for h in cmd.get(c["id"])["history"]][-2:] == ["ACCEPTED", "EXECUTED"]


async def test_ack_stages(inv):
    cmd, _ = make(inv, OpsStore(), Clock(), light_time=0)
    a = await cmd.submit("n01", "PING")
    b = await cmd.submit("n01", "REBOOT", {"delay_s": 5}, confirm=True)
    c = await cmd.submit("n01", "PING")
    cmd.on_ack("n01", acks((a["counter"], 0, 0), (b["counter"], 1, 4), (a["counter"], 2, 0),
                           (c["counter"], 0, 0), (c["counter"], 3, 6), (12345, 2, 0)))
    assert [h[0] for h in cmd.get(a["id"])["history"]] == ["QUEUED", "SENT", "ACCEPTED", "EXECUTED"]
    rb = cmd.get(b["id"])
    assert (rb["stage"], rb["reason"]) == ("REJECTED", "BAD_ARGS")
    assert (cmd.get(c["id"])["stage"], cmd.get(c["id"])["reason"]) == ("FAILED", "EXEC_ERROR")
    done = await cmd.wait(a["id"], 1)
    assert done["stage"] == "EXECUTED"
    # ACKs from another node never match this node's counters
    d = await cmd.submit("n01", "PING")
    cmd.on_ack("n02", acks((d["counter"], 2, 0)))
    assert cmd.get(d["id"])["stage"] == "SENT"


async def test_time_sync_filled_at_release_with_light_time(inv):
    clock = Clock()
    cmd, sent = make(inv, OpsStore(), clock, light_time=1.28)
    c = await cmd.submit("n01", "TIME_SYNC")
    _, _, _, a0, a1, _ = ccsds.open_tc(inv.node("n01").key, b"n01", sent[0][1], 0, NOW)
    args = load().command("TIME_SYNC").unpack_args(sent[0][1][a0:a1])
    assert args["coarse"] + args["fine"] / 65536 == pytest.approx(T0 + 1.28 - EPOCH_2000, abs=1e-3)
    assert cmd.get(c["id"])["args"]["coarse"] == args["coarse"]


async def test_audit_log_persists(inv, tmp_path):
    store = OpsStore(tmp_path / "ops.db")
    cmd, _ = make(inv, store, Clock(), {"n01": False, "n02": False})
    q = await cmd.submit("n01", "PING", user="dave")
    store.close()
    cmd2, sent = make(inv, OpsStore(tmp_path / "ops.db"), Clock(), {"n01": True, "n02": True})
    await cmd2.pump()  # a queued command survives a ground restart and is released
    row = cmd2.get(q["id"])
    assert row["stage"] == "SENT" and row["user"] == "dave" and len(sent) == 1


async def test_window_signed_into_the_tc(inv):
    cmd, sent = make(inv, OpsStore(), Clock())
    await cmd.submit("n01", "PING", not_before=T0 - 0.5, not_after=T0 + 30.25)
    tc = sent[0][1]
    # rounded outwards to whole wire-epoch seconds
    assert struct.unpack_from(">II", tc, 18) == (NOW - 1, NOW + 31)
    key = inv.node("n01").key
    assert ccsds.open_tc(key, b"n01", tc, 0, NOW)[0] == ccsds.TC_OK
    assert ccsds.open_tc(key, b"n01", tc, 0, NOW + 32)[0] == ccsds.TC_EXPIRED
    assert ccsds.open_tc(key, b"n01", tc, 0, NOW - 2)[0] == ccsds.TC_NOT_YET_VALID
    # the window cannot be widened without the key: any change breaks the MAC
    forged = bytearray(tc)
    forged[22:26] = (0).to_bytes(4, "big")
    ccsds.seal(forged, 0, len(forged))
    assert ccsds.open_tc(key, b"n01", bytes(forged), 0, NOW + 32)[0] == ccsds.TC_BAD_MAC


async def test_counter_lost_event_answered_with_tc_resync(tmp_path):
    """A node's TC_COUNTER_LOST event (arg0 = nonce) makes the ground send TC_RESYNC(nonce) by
    itself: once per nonce (the node repeats it on every refusal), a bounded number per hour."""
    import asyncio
    import time

    from ground.ops import Operations
    from ground.ops.operations import RESYNC_MAX_PER_HOUR, RESYNC_USER

    inv = Inventory.generate("moon", ["n01"])
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append((topic, payload))

    ops = Operations(inv, OpsStore(tmp_path / "ops.db"), publish=publish, light_time=0)
    ops.commander.reachable = lambda node: True

    def lost(nonce: int, counter: int) -> None:
        res, payload = parse_packets(make_packet("EVENT", code=14, severity=3, arg0=nonce, arg1=counter))
        ops.on_packets("moon", "n01", res, None, time.time(), payload)

    lost(12345, 0)
    lost(12345, 77)  # the same boot refusing another TC: no second resync
    for _ in range(50):
        await asyncio.sleep(0.01)
    key = inv.node("n01").key
    now = int(time.time() - EPOCH_2000)
    assert len(sent) == 1
    st, op, ctr, a0, a1, _ = ccsds.open_tc(key, b"n01", sent[0][1], -1, now)
    assert st == ccsds.TC_OK and load().command(op).name == "TC_RESYNC"
    assert load().command(op).unpack_args(sent[0][1][a0:a1]) == {"nonce": 12345}
    row = ops.commander.list(limit=1)[0]
    assert row["user"] == RESYNC_USER and row["command"] == "TC_RESYNC"
    # a flood of forged nonces is bounded
    for n in range(1, 40):
        lost(100 + n, 0)
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert len(sent) == RESYNC_MAX_PER_HOUR


async def test_held_for_a_sleeping_node_and_released_before_its_contact(inv):
    """A node that announced a sleep gets nothing released into it: HELD until its contact
    less the light time; a command the sleep crossed in flight is not TIMED_OUT meanwhile."""
    clock = Clock()
    asleep: dict[str, tuple[float | None, str] | None] = {"n01": (T0 + 100.0, "asleep until +101.28"), "n02": None}
    reach = {"n01": False, "n02": True}
    cmd, sent = make(inv, OpsStore(), clock, reach, light_time=1.28, ack_timeout=5.0, exec_timeout=15.0,
                     hold=lambda n: asleep[n])
    a = await cmd.submit("n01", "PING")
    assert a["stage"] == "HELD" and [h[0] for h in a["history"]] == ["QUEUED", "HELD"]
    assert a["reason"] == "asleep until +101.28" and sent == []
    clock.t = T0 + 99.9
    await cmd.pump()
    assert cmd.get(a["id"])["stage"] == "HELD" and sent == []
    clock.t = T0 + 100.0  # one light time before the contact: into the broker, for the reconnect
    await cmd.pump()
    r = cmd.get(a["id"])
    assert r["stage"] == "SENT" and len(sent) == 1
    # the node is still asleep (it wakes at +101.28, answers after its reconnect round trip)
    clock.t = T0 + 100.0 + 2.56 + 5.0 + 1.0
    await cmd.pump()
    assert cmd.get(a["id"])["stage"] == "SENT"
    asleep["n01"] = None  # awake: its ACK comes
    cmd.on_ack("n01", acks((r["counter"], 0, 0), (r["counter"], 2, 0)))
    r = cmd.get(a["id"])
    assert r["stage"] == "EXECUTED" and "TIMED_OUT" not in [h[0] for h in r["history"]]
    assert [h[0] for h in r["history"]] == ["QUEUED", "HELD", "SENT", "ACCEPTED", "EXECUTED"]
    # n02 is awake: sent at once; then it announces a sleep until further notice before it answered
    clock.t = T0 + 200
    b = await cmd.submit("n02", "PING")
    assert b["stage"] == "SENT"
    asleep["n02"] = (None, "asleep until further notice")
    clock.t = T0 + 200 + 60  # far beyond ack_timeout + round trip: still waiting for its contact
    await cmd.pump()
    r = cmd.get(b["id"])
    assert r["stage"] == "SENT" and r["history"][-1][0] == "ASLEEP" and "before it answered" in r["history"][-1][2]
    assert cmd.store.commands(cid=b["id"])[0]["history"][-1][0] == "ASLEEP"  # stored, no private keys
    asleep["n02"] = None  # heard again at +260: the deadline runs from its last sleeping moment
    clock.t = T0 + 260 + 2.56 + 5.0 - 0.1
    await cmd.pump()
    assert cmd.get(b["id"])["stage"] == "SENT"
    clock.t = T0 + 260 + 2.56 + 5.0 + 0.1
    await cmd.pump()
    assert cmd.get(b["id"])["stage"] == "TIMED_OUT"  # it never answered: a timeout after all
    # a TIME_SYNC filled at release waits until the node is heard (its value must not age in
    # the broker); one with explicit values goes at the contact like any command
    asleep["n01"] = (T0 + 280.0, "asleep")
    clock.t = T0 + 270
    ts = await cmd.submit("n01", "TIME_SYNC")
    ts2 = await cmd.submit("n01", "TIME_SYNC", {"coarse": NOW + 282, "fine": 0})
    clock.t = T0 + 281
    await cmd.pump()
    assert cmd.get(ts["id"])["stage"] == "HELD" and cmd.get(ts2["id"])["stage"] == "SENT"
    asleep["n01"], reach["n01"] = None, True  # heard again
    await cmd.pump()
    assert cmd.get(ts["id"])["stage"] == "SENT"
    reach["n01"] = False
    # a held command can be cancelled; and expires with its window
    asleep["n01"] = (T0 + 1000.0, "asleep")
    clock.t = T0 + 300
    c = await cmd.submit("n01", "PING")
    d = await cmd.submit("n01", "PING", not_after=T0 + 310)
    assert c["stage"] == d["stage"] == "HELD"
    assert cmd.cancel(c["id"], "bob")["stage"] == "CANCELLED"
    clock.t = T0 + 311
    await cmd.pump()
    assert cmd.get(d["id"])["stage"] == "EXPIRED"

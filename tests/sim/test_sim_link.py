"""The link emulator with real sockets: delay, cut/refuse/restore, windows, corruption."""

from __future__ import annotations

import asyncio
import time

import pytest

from sim.link import LinkProxy, Visibility, _MqttFramer, _publish_payload


async def _echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(4096):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def test_delay_applies_both_ways_and_keeps_order() -> None:
    srv, port = await _echo_server()
    link = await LinkProxy("127.0.0.1", port, delay=0.3, jitter=0.05, mqtt=False).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        t0 = time.monotonic()
        for i in range(20):
            w.write(b"%03d" % i)
        got = await asyncio.wait_for(r.readexactly(60), 20)
        rtt = time.monotonic() - t0
        assert got == b"".join(b"%03d" % i for i in range(20))
        assert rtt >= 0.6, rtt  # one delay out, one back
        w.close()
    finally:
        await link.stop()
        srv.close()


async def test_zero_delay_passes_through() -> None:
    srv, port = await _echo_server()
    link = await LinkProxy("127.0.0.1", port, delay=0, mqtt=False).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        w.write(b"x" * 100000)
        assert await asyncio.wait_for(r.readexactly(100000), 20) == b"x" * 100000
        assert link.stats.bytes_up == 100000 and link.stats.bytes_down == 100000
        w.close()
    finally:
        await link.stop()
        srv.close()


async def test_cut_drops_refuses_then_restore() -> None:
    srv, port = await _echo_server()
    link = await LinkProxy("127.0.0.1", port, delay=0, mqtt=False).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        w.write(b"ping")
        assert await asyncio.wait_for(r.readexactly(4), 10) == b"ping"
        link.cut()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(r.readexactly(1), 10)
        # while down: a new connection is accepted, then reset before any byte passes
        r2, w2 = await asyncio.open_connection("127.0.0.1", link.port)
        w2.write(b"lost")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(r2.readexactly(4), 10)
        assert link.stats.refused >= 1 and link.stats.cuts == 1
        link.restore()
        r3, w3 = await asyncio.open_connection("127.0.0.1", link.port)
        w3.write(b"back")
        assert await asyncio.wait_for(r3.readexactly(4), 10) == b"back"
        w3.close()
    finally:
        await link.stop()
        srv.close()


def test_visibility_schedule() -> None:
    v = Visibility(period=100, visible=60, outages=[(10, 5)])
    assert v.is_up(0) and v.is_up(59.9) and not v.is_up(60) and not v.is_up(99) and v.is_up(100)
    assert not v.is_up(12) and v.is_up(15)


async def test_visibility_drives_the_link() -> None:
    srv, port = await _echo_server()
    link = await LinkProxy("127.0.0.1", port, delay=0, mqtt=False).start()
    task = asyncio.create_task(Visibility(outages=[(0.2, 0.5)]).drive(link, tick=0.02))
    try:
        await asyncio.sleep(0.4)
        assert not link.up
        deadline = time.monotonic() + 10
        while not link.up and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert link.up and link.stats.cuts == 1
    finally:
        task.cancel()
        await link.stop()
        srv.close()


def _publish(topic: bytes, payload: bytes, pid: int = 7) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + pid.to_bytes(2, "big") + payload
    assert len(body) < 128
    return bytes([0x32, len(body)]) + body


def test_mqtt_framer_and_payload_span() -> None:
    a = _publish(b"lunabase/s/n/tm", b"PAYLOAD!")
    f = _MqttFramer()
    stream = b"\xc0\x00" + a + a
    pkts = f.feed(stream[:5]) + f.feed(stream[5:])
    assert [bytes(p) for p in pkts] == [b"\xc0\x00", a, a]
    s, e = _publish_payload(bytearray(a))  # type: ignore[misc]
    assert a[s:e] == b"PAYLOAD!"


async def test_corruption_hits_only_publish_payloads() -> None:
    srv, port = await _echo_server()
    link = await LinkProxy("127.0.0.1", port, delay=0, seed=3).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        msg = _publish(b"lunabase/s/n/tm", b"A" * 40)
        link.corrupt(1)
        w.write(b"\xc0\x00" + msg + msg)
        got = await asyncio.wait_for(r.readexactly(2 + 2 * len(msg)), 10)
        assert got[:2] == b"\xc0\x00"
        first, second = got[2 : 2 + len(msg)], got[2 + len(msg) :]
        assert second == msg
        diff = [i for i in range(len(msg)) if first[i] != msg[i]]
        assert len(diff) == 1 and diff[0] >= len(msg) - 40  # inside the payload
        assert link.stats.corrupted == 1 and link.stats.publishes == 2
        w.close()
    finally:
        await link.stop()
        srv.close()


async def test_drop_swallows_a_publish_and_acknowledges_it_to_the_node() -> None:
    """A dropped PUBLISH never reaches the broker; the node gets its PUBACK from the emulator."""
    srv, port = await _echo_server()  # the "broker" echoes what it receives
    link = await LinkProxy("127.0.0.1", port, delay=0, seed=3).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        lost, kept = _publish(b"lunabase/s/n/tm", b"A" * 40, pid=7), _publish(b"lunabase/s/n/tm", b"B" * 40, pid=8)
        link.drop(1)
        w.write(b"\xc0\x00" + lost + kept)
        got = await asyncio.wait_for(r.readexactly(2 + len(kept) + 4), 10)
        assert b"\x40\x02\x00\x07" in got  # the PUBACK of packet id 7, from the emulator
        assert kept in got and lost not in got and b"A" * 40 not in got
        assert link.stats.dropped == 1 and link.stats.publishes == 2 and link._drop_next == 0
        w.close()
    finally:
        await link.stop()
        srv.close()

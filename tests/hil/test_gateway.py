"""The UART gateway over a pty pair: good frames published, garbage and split frames
handled, every rejected frame counted by reason, reconnect after the port disappears,
and commands from MQTT written back as COBS frames."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ground.parse import PyParser
from hil.gateway import Gateway, frame_packets
from sim.mosquitto import Mosquitto
from wire import ccsds, cobs, defs, topics
from wire.dictionary import load


def tm(apid: int = defs.APID_HK, seq: int = 0) -> bytes:
    """A valid TM packet of `apid` with the dictionary's length (the ground parser checks it)."""
    length = load().packet(apid).length
    payload = b"\x01" * (length - ccsds.OVERHEAD)
    pb = ccsds.PacketBuffer(apid, length)
    pb.seq = seq
    pb.buf[ccsds.HEADER_LEN : ccsds.HEADER_LEN + len(payload)] = payload
    return bytes(pb.finish(100, 0))


def wait(cond, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_feed_counts_every_rejected_frame_by_reason() -> None:
    got: list[bytes] = []
    gw = Gateway("unused", "s", "n1", lambda t, p: got.append(p), max_frame=256)
    good = tm(seq=1)
    bad_crc = bytearray(tm(seq=2))
    bad_crc[-1] ^= 0xFF
    tc = ccsds.build_tc(b"k" * 32, b"n01", 0x7F, 0, 1, 1, b"")
    stream = (
        b"\x13\x37garbage"  # line noise before the first delimiter: one malformed "frame"
        + b"\x00" + frame_packets(good)
        + frame_packets(bytes(bad_crc))
        + frame_packets(b"\x01\x02\x03")
        + frame_packets(good[:-3])
        + frame_packets(tc)
        + b"\x05\x01\x00"  # code 5 runs past the frame end
        + b"\x01" * 400 + b"\x00"  # oversize
        + b"\x00\x00"  # idle
        + frame_packets(tm(seq=3), tm(apid=defs.APID_POWER, seq=4))  # two packets in one frame
    )  # fmt: skip
    gw.feed(stream[:37])  # split frames: any chunking gives the same result
    for i in range(37, len(stream), 5):
        gw.feed(stream[i : i + 5])
    assert got == [good, tm(seq=3) + tm(apid=defs.APID_POWER, seq=4)]
    r = gw.stats.rejected
    assert r["bad_crc"] == 1 and r["short"] == 1 and r["bad_length"] == 1 and r["not_tm"] == 1
    assert r["oversize"] == 1 and r["cobs"] >= 1
    assert gw.stats.frames == 2 and gw.stats.packets == 3


def _pty(link: Path) -> tuple[int, int]:
    m, s = os.openpty()
    import tty

    tty.setraw(s)
    tmp = link.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.ttyname(s))
    tmp.replace(link)  # like a udev /dev/serial/by-id link re-pointed after re-enumeration
    return m, s


def test_a_port_that_will_not_open_is_reported_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    def refuse() -> None:
        raise OSError(2, "No such file or directory: '/dev/ttyUSB9'")

    gw = Gateway("/dev/ttyUSB9", "moon", "n01", lambda t, p: None, open_port=refuse).start()
    try:
        deadline = time.monotonic() + 30
        while gw.stats.open_failures < 3:  # backoff 0.1, 0.2, 0.4 s
            assert time.monotonic() < deadline, "the gateway stopped retrying"
            time.sleep(0.05)
    finally:
        gw.stop()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "cannot open /dev/ttyUSB9" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert not gw.connected.is_set()


def test_gateway_over_a_pty_with_mqtt_and_a_disconnect(tmp_path: Path) -> None:
    link = tmp_path / "ttyNODE"
    m, s = _pty(link)
    fds = [m, s]
    seen: list[bytes] = []
    cmds = b""
    with Mosquitto() as broker:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topics.topic("moon", "n07", topics.TM), qos=1)
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = lambda c, u, msg: seen.append(bytes(msg.payload))
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        gw = Gateway(str(link), "moon", "n07", lambda t, p: pub.publish(t, p, qos=1))
        try:
            assert subscribed.wait(10)
            gw.start()
            assert gw.connected.wait(10), "the gateway did not open the pty"
            os.write(m, b"\xff\xfe noise" + b"\x00" + frame_packets(tm(seq=10)))
            wait(lambda: len(seen) == 1, what="the first packet on MQTT")
            res = PyParser().parse(seen[0])
            assert res.count == 1 and int(res.seq[0]) == 10 and not res.rejected
            # command path: MQTT cmd topic -> COBS frame on the UART
            tc = ccsds.build_tc(b"k" * 32, b"n01", 0x7F, 3, 1, 42, b"")
            assert gw.on_command(tc)
            deadline = time.monotonic() + 10
            while not cmds.endswith(b"\x00") and time.monotonic() < deadline:
                try:
                    cmds += os.read(m, 4096)
                except BlockingIOError:
                    time.sleep(0.02)
            assert cobs.decode(cmds[:-1]) == tc
            # a frame cut by a disconnect, then the port comes back under the same name
            os.write(m, frame_packets(tm(seq=11))[:7])
            time.sleep(0.5)
            os.close(m)
            os.close(s)
            fds.clear()
            wait(lambda: gw.stats.disconnects >= 1, what="the gateway to notice the disconnect")
            m, s = _pty(link)
            fds += [m, s]
            wait(lambda: gw.stats.reconnects >= 1 and gw.connected.is_set(), what="the gateway to reopen the port")
            os.write(m, b"\x00" + frame_packets(tm(seq=12)))
            wait(lambda: len(seen) == 2, what="a packet after the reconnect")
            assert int(PyParser().parse(seen[1]).seq[0]) == 12
            assert gw.stats.rejected["truncated"] == 1
            assert gw.stats.rejected["cobs"] == 1  # the noise before the first delimiter
        finally:
            gw.stop()
            sub.loop_stop()
            pub.loop_stop()
            sub.disconnect()
            pub.disconnect()
            for fd in fds:
                os.close(fd)


@pytest.mark.parametrize("tls", [False, True], ids=["mqtt", "mqtts"])
def test_mqtt_commands_reach_the_uart(tmp_path: Path, tls: bool) -> None:
    """Through main_gateway's wiring: a TC published on the cmd topic comes out of the UART
    (mqtts: the gateway verifies the broker against --ca)."""
    import argparse
    import ssl

    from ground.broker import make_self_signed
    from hil import gateway as gwmod

    link = tmp_path / "ttyCMD"
    m, s = _pty(link)
    os.set_blocking(m, False)
    certs = make_self_signed(tmp_path / "tls") if tls else None
    with Mosquitto(tls=certs) as broker:
        args = argparse.Namespace(port=str(link), node="n09", site="moon", inventory="", baud=115200,
                                  broker=broker.url, ca=str(certs.cafile) if certs else None)  # fmt: skip
        done = threading.Event()
        t = threading.Thread(target=lambda: (gwmod.main_gateway_until(args, done)), daemon=True)
        t.start()
        try:
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            if certs:
                pub.tls_set_context(ssl.create_default_context(cafile=str(certs.cafile)))
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            tc = ccsds.build_tc(b"k" * 32, b"n01", 0x7F, 1, 1, 7, b"\x01\x02")
            got = b""
            deadline = time.monotonic() + 30
            while not got.endswith(b"\x00") and time.monotonic() < deadline:
                pub.publish(topics.topic("moon", "n09", topics.CMD), tc, qos=1) if not got else None
                time.sleep(0.3)
                try:
                    got += os.read(m, 4096)
                except BlockingIOError:
                    pass
            pub.loop_stop()
            pub.disconnect()
            assert got.endswith(b"\x00"), "no COBS frame on the UART"
            assert cobs.decode(got.split(b"\x00")[0]) == tc
        finally:
            done.set()
            t.join(15)
            os.close(m)
            os.close(s)


def test_frames_written_by_micropython_reach_the_gateway(tmp_path: Path, micropython_bin: str) -> None:
    """The node side in the MicroPython VM (wire.ccsds + wire.cobs, preallocated buffers)
    writes COBS frames on a 'UART' (a pty); the gateway decodes and checks them."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    hk = load().packet("HK")
    script = tmp_path / "uart_node.py"
    script.write_text(
        "import sys\n"
        "from wire import ccsds, cobs\n"
        f"pb = ccsds.PacketBuffer({hk.apid}, {hk.length})\n"
        f"frame = bytearray(cobs.max_frame_len({hk.length}))\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'boot noise\\r\\n\\x00')\n"  # a delimiter first: resync after boot output
        "for i in range(5):\n"
        "    pb.seq = i\n"
        "    pb.buf[12] = i\n"
        "    n = cobs.frame_into(pb.finish(1000 + i, 0), frame)\n"
        "    out.write(memoryview(frame)[:n])\n"
    )
    m, s = os.openpty()
    import tty

    tty.setraw(s)
    got: list[bytes] = []
    gw = Gateway(os.ttyname(s), "moon", "n05", lambda t, p: got.append(p))
    try:
        gw.start()
        assert gw.connected.wait(10)
        env = dict(os.environ, MICROPYPATH=f".frozen:{repo}")
        r = subprocess.run([micropython_bin, str(script)], stdout=m, stderr=subprocess.PIPE, env=env, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        wait(lambda: len(got) == 5, what=f"5 packets from the MicroPython node (gateway stats {gw.stats})")
    finally:
        gw.stop()
        os.close(m)
        os.close(s)
    res = PyParser().parse(b"".join(got))
    assert res.count == 5 and not res.rejected
    assert [int(x) for x in res.seq] == [0, 1, 2, 3, 4]
    assert gw.stats.rejected["cobs"] == 1  # the boot noise before the first delimiter


def test_status_frames_published_retained_and_offline_on_silence(tmp_path: Path) -> None:
    """A node's status frame (JSON, first byte '{') goes to the status publisher verbatim; a
    malformed one is counted; silence for offline_after publishes the node offline for it."""
    import json

    link = tmp_path / "ttySTATUS"
    m, s = _pty(link)
    statuses: list[bytes] = []
    gw = Gateway(str(link), "moon", "n03", lambda t, p: None, publish_status=lambda t, p: statuses.append(p),
                 offline_after=1.0)  # fmt: skip
    try:
        gw.start()
        assert gw.connected.wait(10)
        st = {"state": "online", "mode": "DAY", "boot": 4, "link": "uart"}
        os.write(m, b"\x00" + frame_packets(json.dumps(st).encode()) + frame_packets(b"{not json"))
        wait(lambda: statuses, what="the status frame")
        assert json.loads(statuses[0]) == st and gw.online
        wait(lambda: len(statuses) == 2, what="offline after 1 s of silence")
        off = json.loads(statuses[1])
        assert off["state"] == "offline" and off["via"] == "gateway" and off["boot"] == 4, off
        assert gw.stats.rejected["bad_status"] == 1 and gw.stats.statuses == 1 and gw.stats.offline == 1
    finally:
        gw.stop()
        os.close(m)
        os.close(s)

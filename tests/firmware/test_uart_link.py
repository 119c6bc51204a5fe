"""The firmware's UART link (config "link": "uart") end to end: the real firmware on the
MicroPython VM writes COBS frames on one end of a pty pair, `hil.gateway.Gateway` reads
the other end and bridges to a private mosquitto, the ground parser decodes what arrives.
Telecommands go down the same pty; garbage both ways and a port hang-up are counted."""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import tty
from pathlib import Path

import paho.mqtt.client as mqtt
from test_node import acks, events, hk_values

from hil.gateway import Gateway, frame_packets
from wire import ccsds, cobs, defs, topics

from firmware_helpers import KEY, SITE, node_config, run_vm, seq_gaps, wait_for

TIOCVHANGUP = 0x5437  # Linux: hang up a tty (every open file of it reads EOF / EIO)


def tc(op: int, counter: int, args: bytes = b"", key: bytes = KEY, seq: int = 0, node: bytes = b"n01",
       not_before: int = 0, not_after: int = 0) -> bytes:
    return ccsds.build_tc(key, node, defs.TC_APID, seq, op, counter, args, 0, 0, 0, not_before, not_after)


def uart_config(broker_port: int, fd: int, **over) -> dict:
    cfg = node_config(broker_port, **over)
    cfg["link"] = "uart"
    cfg["uart"] = {"fd": fd, "status_s": 2}
    return cfg


def missing(seqs: list[int]) -> list[int]:
    """Sequence counts absent between the first and the last of a de-duplicated list."""
    have = set(seqs)
    return [s for s in range(min(seqs), max(seqs) + 1) if s not in have]


def retained(port: int, topic: str) -> dict:
    """The retained message on `topic`, as a subscriber connecting now gets it."""
    import json

    got: list[dict] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, qos=1)
    c.on_message = lambda cl, u, msg: got.append(json.loads(msg.payload)) if msg.retain else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        wait_for(lambda: got, 10, f"a retained message on {topic}")
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0]


class GatewayOnBroker:
    """hil.gateway.Gateway wired to MQTT the way `lunabase gateway` wires it (paho, QoS 1,
    status retained, cmd topic -> UART)."""

    def __init__(self, port: str, broker_port: int, node: str = "n01") -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gateway-{node}")
        self.seen = bytearray()
        self.gw = Gateway(port, SITE, node, lambda t, p: c.publish(t, p, qos=1),
                          publish_status=lambda t, p: c.publish(t, p, qos=1, retain=True), offline_after=8.0)
        subscribed = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(self.gw.cmd_topic, qos=1)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = lambda cl, u, msg: self.gw.on_command(bytes(msg.payload))
        c.connect("127.0.0.1", broker_port)
        c.loop_start()
        assert subscribed.wait(10), "gateway's MQTT client did not subscribe"
        self.client = c
        feed = self.gw.feed

        def keep(data: bytes) -> None:  # the last bytes read, for failure messages
            self.seen += data
            del self.seen[:-4096]
            feed(data)

        self.gw.feed = keep  # type: ignore[method-assign]
        self.gw.start()

    def close(self) -> None:
        self.gw.stop()
        self.client.loop_stop()
        self.client.disconnect()


def test_uart_node_through_the_gateway(broker, ground, make_node, tmp_path: Path) -> None:
    m, s = os.openpty()
    tty.setraw(s)
    os.set_blocking(m, False)  # the node's end: a full buffer must not stall the VM
    link = tmp_path / "ttyNODE"
    link.symlink_to(os.ttyname(s))  # the gateway's port, as /dev/serial/by-id/... would be
    os.close(s)  # the gateway opens it by name, like a device
    gwb = GatewayOnBroker(str(link), broker.port)
    gw = gwb.gw
    node = make_node(uart_config(broker.port, m))
    node.pass_fds = (m,)
    try:
        assert gw.connected.wait(10)
        node.start()
        def online() -> list:
            return [st for _, st, _r in ground.status if st["state"] == "online" and st.get("link") == "uart"]

        births = wait_for(online, 30, "the node's status via the gateway", node)
        assert births[0]["boot"] == 1 and births[0]["dict_crc"] == defs.DICT_CRC
        late = retained(broker.port, topics.topic(SITE, "n01", topics.STATUS))
        assert late["state"] == "online" and late["link"] == "uart", late  # a late subscriber sees it
        wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= 6, 30, "6 HK packets over the UART", node)

        # garbage on the uplink (the node's end of the line) between the node's frames
        bad = bytearray(ground.by_apid(defs.APID_HK)[0][3])
        bad[-1] ^= 0xFF
        # a COBS code running past the frame end, then a valid frame holding a bad CRC
        os.write(m, b"\x05garbage\x00" + frame_packets(bytes(bad)))
        # garbage on the downlink, written by a second opener of the gateway's port
        g = os.open(link, os.O_RDWR | os.O_NOCTTY)  # already raw (no tty.setraw: its TCSAFLUSH drops input)
        bad_tc = bytearray(tc(defs.OP_PING, 99))
        bad_tc[-1] ^= 0xFF
        os.write(g, b"\x05a\x00" + b"\x03ab\x00" + frame_packets(bytes(bad_tc)))
        os.close(g)

        # signed telecommands through broker -> gateway -> UART -> node, ACKs back up
        ground.send_tc("n01", tc(defs.OP_PING, 10, seq=1))
        ground.send_tc("n01", tc(defs.OP_PING, 11, key=b"\x55" * 32, seq=2))  # forged
        wait_for(lambda: [a for a in acks(ground) if a[0] == 10 and a[2] == defs.ACK_STAGE_EXECUTED], 20,
                 "PING executed over the UART", node)
        wait_for(lambda: [a for a in acks(ground) if a[0] == 11 and a[3] == defs.ACK_REASON_BAD_MAC], 20,
                 "forged PING rejected", node)
        assert any(e[0] == defs.EVENT_TC_REJECTED and e[3] == defs.ACK_REASON_BAD_MAC for e in events(ground))
        # the node counts the downlink garbage by reason in its status; none reached the TC path
        want = {"cobs": 1, "short": 1, "bad_crc": 1}
        st = wait_for(lambda: [x for _, x, _ in ground.status if x.get("rx_rejected") == want], 20,
                      f"node status with rx_rejected {want}", node)
        assert st[-1]["rx_frames"] >= 2
        assert not [a for a in acks(ground) if a[0] == 99], "a TC with a bad CRC reached the telecommand path"
        # ... and the gateway the uplink garbage: two frames rejected by reason.  If the node's
        # frame was written in pieces and the garbage landed between them, that frame is
        # rejected too: its packets are then sequence gaps, filled by REPLAY below
        try:
            wait_for(lambda: sum(gw.stats.rejected.values()) >= 2, 10, "the gateway to count the uplink garbage")
        except AssertionError as e:
            raise AssertionError(f"{e}\ngateway {gw.stats}\nlast bytes {bytes(gwb.seen[-600:])!r}") from None
        before = dict(gw.stats.rejected)
        assert set(before) <= {"cobs", "bad_crc", "bad_length", "short"}, before

        # the gateway's port hangs up (USB re-enumeration) and comes back under the same name
        h = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        fcntl.ioctl(h, TIOCVHANGUP)
        os.close(h)
        wait_for(lambda: gw.stats.disconnects >= 1 and gw.stats.reconnects >= 1 and gw.connected.is_set(), 20,
                 "the gateway to reopen the port")
        wait_for(lambda: [x for _, x, _ in ground.status if x["state"] == "offline" and x.get("via") == "gateway"], 10,
                 "offline published by the gateway for the node")
        n0 = len(ground.status)
        wait_for(lambda: [x for _, x, _ in ground.status[n0:] if x["state"] == "online"], 20, "online again", node)
        n_hk = len(ground.by_apid(defs.APID_HK))
        wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= n_hk + 6, 30, "HK after the hang-up", node)
        extra = {k: v - before.get(k, 0) for k, v in gw.stats.rejected.items() if v != before.get(k, 0)}
        # at most the frame the hang-up cut (its head 'truncated', its tail rejected by content)
        assert sum(extra.values()) <= 2 and set(extra) <= {"truncated", "cobs", "short", "bad_length", "bad_crc"}, extra
        print(f"rejected by the gateway before the hang-up {before}, at the hang-up {extra}")
        assert not ground.rejected, ground.rejected

        # whatever the hang-up lost is a visible sequence gap, and the journal still has it
        lost = {}
        for apid, lst in ground.unique().items():
            seqs = [sq for sq, _ in sorted(lst, key=lambda x: x[1])]
            if missing(seqs):
                lost[apid] = missing(seqs)
        for i, (apid, seqs) in enumerate(lost.items()):
            a, b = min(seqs), max(seqs)
            ground.send_tc("n01", tc(defs.OP_REPLAY, 20 + i, struct.pack(defs.ARGS_REPLAY, apid, a, b - a + 1), seq=3 + i))

        def contiguous() -> bool:
            u = ground.unique()
            return all(seq_gaps([sq for sq, _ in sorted(u[apid], key=lambda x: x[1])]) == 0 for apid in u)

        wait_for(contiguous, 30, f"REPLAY to fill the gaps {lost}", node)
        # REPLAY over the UART re-sends what the journal holds (already delivered: duplicates)
        first = min(sq for sq, _ in ground.unique()[defs.APID_HK])
        ground.send_tc("n01", tc(defs.OP_REPLAY, 30, struct.pack(defs.ARGS_REPLAY, defs.APID_HK, first, 3), seq=9))
        def twice() -> list[int]:
            return [sq for sq in range(first, first + 3) if [p for p in ground.by_apid(defs.APID_HK) if p[1] == sq][1:]]

        wait_for(lambda: len(twice()) == 3, 20, "3 replayed HK packets", node)
        raw: dict = {}
        for a, sq, t, b in ground.packets:
            assert raw.setdefault((a, sq, t), b) == b  # a replay is the journaled bytes
        # heap: the UART node streams without a downward trend and keeps a margin
        heap = hk_values(ground, "free_heap")[4:]
        early, late_heap = heap[: len(heap) // 2], heap[len(heap) // 2 :]
        assert min(late_heap) >= min(early) - 256, f"free heap trends down: {heap}"
        assert min(heap) > 3000, heap
        print(f"lost at the hang-up and replayed: {lost}; gateway {gw.stats}; free heap {min(heap)}..{max(heap)}")
    finally:
        node.kill()
        gwb.close()
        os.close(m)


CASES_SRC = '[bytes(range(1, 256)) * 4, bytes(1000), bytes(i % 7 for i in range(1024)), b"\\x11" * 254, b"\\x11" * 253 + b"\\x00"]'
CASES = eval(CASES_SRC)  # the same frames on both sides: long runs without a zero, all zeros, a full 1024


def test_in_place_cobs_and_uart_write_allocate_nothing(micropython_bin, firmware_image, tmp_path: Path) -> None:
    """On the VM: the UART link's frame path (packets read to tx[k:], COBS in place into
    tx[0:], write(buf, off, n)) under heap_lock, and its bytes equal wire.cobs.encode."""
    code = f"""
import micropython, json
from wire import cobs
from lunanode.uartlink import UartLink
class A: pass
app = A()
app.cfg = {{"uart": {{"max_frame": 1024, "rx_max": 512, "status_s": 10}}}}
L = UartLink(app)
f = open("out.bin", "wb")
cases = {CASES_SRC}
ok = []
def frame(n):
    m = cobs.encode_into(L.src, L.tx, n, 0)
    L.tx[m] = 0
    return f.write(L.tx, 0, m + 1)
for c in cases:
    n = len(c)
    L.src[:n] = c
    micropython.heap_lock()
    try:
        w = frame(n)
    finally:
        micropython.heap_unlock()
    ok.append(bytes(L.tx[:w]) == cobs.encode(c) + b"\\x00")
f.close()
print(json.dumps(ok))
"""
    out = run_vm(micropython_bin, firmware_image, code, cwd=tmp_path)
    assert out.strip() == "[true, true, true, true, true]", out
    assert (tmp_path / "out.bin").stat().st_size == sum(len(cobs.encode(c)) + 1 for c in CASES)


def test_only_the_configured_link_is_loaded(micropython_bin, firmware_image, tmp_path: Path) -> None:
    """preload(): a UART node never loads the MQTT client, an MQTT node never the UART link."""
    import json

    code = """
import sys
from lunanode import app
app.preload("config.json")
print(sorted(m for m in sys.modules if m in ("lunanode.mqtt", "lunanode.link", "lunanode.uartlink", "wire.cobs")))
"""
    (tmp_path / "config.json").write_text(json.dumps(uart_config(1883, 0)))
    assert run_vm(micropython_bin, firmware_image, code, cwd=tmp_path).strip() == "['lunanode.uartlink', 'wire.cobs']"
    (tmp_path / "config.json").write_text(json.dumps(node_config(1883)))
    assert run_vm(micropython_bin, firmware_image, code, cwd=tmp_path).strip() == "['lunanode.link', 'lunanode.mqtt']"


def test_uart_config_errors(micropython_bin, firmware_image) -> None:
    code = """
from lunanode import config
def err(raw):
    try:
        config.validate(raw)
    except config.ConfigError as e:
        return str(e)
base = {"node": "n1", "site": "s", "key": "00" * 16}
print(err(dict(base, link="uart")))
print(err(dict(base, link="radio")))
print(err(dict(base)))
print(err(dict(base, board="esp32", link="uart")))
c = config.validate(dict(base, link="uart", uart={"fd": 3}))
print("uart" in c, c["uart"]["fd"], c["uart"]["baud"], "uart" in config.validate(dict(base, broker={"host": "h"})))
"""
    out = run_vm(micropython_bin, firmware_image, code, heap="256K").splitlines()
    assert out[0].startswith("uart.path: missing"), out
    assert out[1].startswith("link: must be mqtt or uart"), out
    assert out[2] == "broker.host: missing (required)", out
    assert out[3] == "None", out  # a board with a UART link needs neither WiFi nor a broker
    assert out[4] == "True 3 115200 False", out  # only a UART node's config has "uart"

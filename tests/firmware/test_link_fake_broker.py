"""The link against a scripted broker: the first connect is retried until a broker
listens, CONNECT carries clean_session=0 + retained will + credentials, Session Present
is accepted, PINGREQ goes out on schedule and a broker that stops answering is detected
within 1.5 x keepalive (then the node reconnects)."""

from __future__ import annotations

import socket
import threading
import time

from sim.mosquitto import free_port

from firmware_helpers import node_config, wait_for


def read_packet(conn: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        b = b""
        while len(b) < n:
            c = conn.recv(n - len(b))
            if not c:
                raise ConnectionError
            b += c
        return b

    t = exact(1)[0]
    n, sh = 0, 0
    while True:
        b = exact(1)[0]
        n |= (b & 0x7F) << sh
        sh += 7
        if not b & 0x80:
            break
    return t, exact(n)


class SilentBroker:
    """Answers CONNECT with CONNACK(session present) and SUBSCRIBE/PUBLISH normally for
    `answer_s` seconds, then goes silent (keeps the TCP connection open)."""

    def __init__(self, port: int, answer_s: float) -> None:
        self.port = port
        self.answer_s = answer_s
        self.connects: list[tuple[float, bytes]] = []
        self.packets: list[tuple[float, int]] = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(4)
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.srv.settimeout(0.3)
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        t0 = time.monotonic()
        try:
            while not self.stop:
                t, body = read_packet(conn)
                now = time.monotonic()
                self.packets.append((now, t))
                quiet = now - t0 > self.answer_s
                if t == 0x10:
                    self.connects.append((now, body))
                    conn.sendall(b"\x20\x02\x01\x00")  # CONNACK, session present
                elif quiet:
                    continue
                elif t & 0xF0 == 0x30 and t & 0x06:  # PUBLISH QoS 1 -> PUBACK
                    tl = (body[0] << 8) | body[1]
                    conn.sendall(b"\x40\x02" + body[2 + tl:4 + tl])
                elif t == 0x82:
                    conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
                elif t == 0xC0:
                    conn.sendall(b"\xd0\x00")
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.srv.close()


def test_first_connect_retried_pings_and_dead_broker_detected(make_node):
    port = free_port()
    cfg = node_config(port, broker={"keepalive": 2, "user": "n01", "password": "pw"})
    node = make_node(cfg).start()
    time.sleep(2.5)  # nothing listens yet: the node must keep trying
    assert node.alive(), node.log()
    assert "connect failed" in node.log()
    fb = SilentBroker(port, answer_s=4.0)
    try:
        wait_for(lambda: fb.connects, 30, "first CONNECT once a broker listens", node)
        body = fb.connects[0][1]
        # variable header: "MQTT", level 4, flags, keepalive 2
        assert body[:7] == b"\x00\x04MQTT\x04", body
        flags = body[7]
        assert flags & 0x02 == 0, "clean_session must be 0"
        assert flags & 0x04 and flags & 0x20 and (flags >> 3) & 3 == 1, f"retained QoS 1 will expected: {flags:#x}"
        assert flags & 0xC0 == 0xC0, "user name and password flags"
        assert body[8:10] == b"\x00\x02"
        assert b'"state": "offline"' in body and b"lunabase/testsite/n01/status" in body
        # silent after 4 s: the node pings, hears nothing, and reconnects within 1.5 x 2 s (+ slack)
        wait_for(lambda: len(fb.connects) >= 2, 40, "reconnect after the broker went silent", node)
        pings = [t for t, k in fb.packets if k == 0xC0]
        assert pings, "no PINGREQ seen"
        gap = fb.connects[1][0] - fb.connects[0][0]
        assert gap >= 4.0, gap
        assert "1.5 x keepalive" in node.log(), node.log()
    finally:
        fb.close()

"""UART link gateway: COBS-framed packets on a serial line <-> the node's MQTT topics.

Wiring: a node without WiFi writes each TM packet (or several back to back) as one COBS
frame, ``COBS(packets) 0x00`` (``wire/cobs.py``), on its UART; the gateway host reads the
UART (USB-serial adapter), checks every packet (CCSDS header, length, CRC-16) and publishes
the good frames' packets on ``lunabase/<site>/<node>/tm`` (QoS 1).  Telecommands arriving
on ``.../cmd`` go back down the same UART as COBS frames.

Nothing on the line makes it raise: garbage, split frames, a frame cut by a disconnect are
skipped at the next 0x00 and counted in ``stats.rejected`` by reason:

    cobs          malformed COBS (a code byte running past the frame end)
    oversize      longer than max_frame bytes before a delimiter
    short         fewer bytes than a CCSDS header + CRC
    bad_length    the header's length disagrees with the frame
    bad_crc       CRC-16 mismatch
    not_tm        a TC (or other type) where TM packets were expected
    truncated     bytes of an unfinished frame lost when the port disconnected

A port that disappears (USB unplugged, pty closed) is reopened with backoff.

Status (the node's birth): a node on a UART has no broker session, so the firmware's UART
link sends its status JSON as a frame of its own (a frame whose first byte is ``{``; a
CCSDS packet never starts with it: version bits 011).  The gateway publishes it retained
(QoS 1) on ``lunabase/<site>/<node>/status``, verbatim.  The node repeats it every
``uart.status_s`` (10 s), so the gateway publishes ``"state": "offline"`` itself (the last
status with ``state``, ``via: "gateway"`` and ``reason``) when no good frame arrived for
``offline_after`` seconds or the port is lost; `lunabase gateway` also sets that as the
MQTT last will of its own connection, so a dead gateway reads as an offline node.
Malformed status frames are counted as ``bad_status``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from wire import ccsds, cobs, topics

__all__ = ["Gateway", "GatewayStats", "frame_packets"]

log = logging.getLogger("hil.gateway")


@dataclass
class GatewayStats:
    """Counters of one gateway; `rejected` maps a reason to frames rejected for it."""

    frames: int = 0  # good frames published
    packets: int = 0
    bytes_in: int = 0
    commands: int = 0  # TC frames written to the UART
    statuses: int = 0  # node status frames published
    offline: int = 0  # "offline" statuses published for the node (silence, port lost)
    disconnects: int = 0
    open_failures: int = 0  # failed attempts to open the port since it was last open
    reconnects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def frame_packets(*packets: bytes) -> bytes:
    """One COBS frame (with its 0x00 delimiter) carrying `packets` back to back."""
    return cobs.encode(b"".join(packets)) + b"\x00"


def check_packets(data: bytes) -> str | None:
    """None when `data` is one or more valid TM packets back to back, else the reason."""
    off = 0
    n = len(data)
    if n < ccsds.OVERHEAD:
        return "short"
    while off < n:
        if n - off < ccsds.OVERHEAD:
            return "bad_length"
        ptype, _apid, _seq, total, _c, _f = ccsds.peek(data, off)
        if total < ccsds.OVERHEAD or off + total > n:
            return "bad_length"
        if not ccsds.check(data, off, total):
            return "bad_crc"
        if ptype != ccsds.TYPE_TM:
            return "not_tm"
        off += total
    return None


class Gateway:
    """Serial <-> MQTT bridge for one node; `publish(topic, payload)` and `on_command` plug into MQTT."""

    def __init__(
        self,
        port: str,
        site: str,
        node: str,
        publish: Callable[[str, bytes], object],
        baudrate: int = 115200,
        max_frame: int = 4096,
        open_port: Callable[[], Any] | None = None,
        publish_status: Callable[[str, bytes], object] | None = None,
        offline_after: float = 30.0,
    ) -> None:
        self.port = port
        self.site, self.node = site, node
        self.publish = publish
        self.baudrate = baudrate
        self.max_frame = max_frame
        self.stats = GatewayStats()
        self.tm_topic = topics.topic(site, node, topics.TM)
        self.cmd_topic = topics.topic(site, node, topics.CMD)
        self.status_topic = topics.topic(site, node, topics.STATUS)
        # status frames are published retained; without a status publisher they are counted only
        self.publish_status = publish_status
        self.offline_after = offline_after
        self.last_status: dict[str, Any] | None = None
        self.online = False  # the last status published for the node said "online"
        self._last_good = time.monotonic()
        self._open_port = open_port or (lambda: serial.serial_for_url(port, baudrate=baudrate, timeout=0.1))
        self._ser: Any = None
        self._buf = bytearray()
        self._skip = False  # inside the tail of an oversize frame (already counted)
        self._stop = threading.Event()
        self._wlock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> Gateway:
        self._thread = threading.Thread(target=self._run, name=f"gateway {self.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        self._close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close(self) -> None:
        s, self._ser = self._ser, None
        self.connected.clear()
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    # --- downlink: commands ---------------------------------------------------------
    def on_command(self, payload: bytes) -> bool:
        """Write one TC (from the cmd topic) to the UART as a COBS frame; False if the port is down."""
        frame = frame_packets(payload)
        with self._wlock:
            s = self._ser
            if s is None:
                self.stats.rejected["cmd_port_down"] += 1
                return False
            try:
                s.write(frame)
            except (serial.SerialException, OSError):
                self.stats.rejected["cmd_port_down"] += 1
                return False
        self.stats.commands += 1
        return True

    # --- uplink ---------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Process bytes read from the UART (public for tests and other transports)."""
        self.stats.bytes_in += len(data)
        buf = self._buf
        start = 0
        while True:
            i = data.find(b"\x00", start)
            if i < 0:
                buf += data[start:]
                if len(buf) > self.max_frame:
                    self.stats.rejected["oversize"] += 1
                    self._skip = True
                    buf.clear()
                return
            buf += data[start:i]
            start = i + 1
            frame = bytes(buf)
            buf.clear()
            if self._skip:
                self._skip = False
                continue  # the tail of an oversize frame: already counted
            if not frame:
                continue  # idle delimiters
            if len(frame) > self.max_frame:
                self.stats.rejected["oversize"] += 1
                continue
            out = bytearray(len(frame))
            k = cobs.decode_into(frame, out, len(frame))
            if k < 0:
                self.stats.rejected["cobs"] += 1
                continue
            pkt = bytes(out[:k])
            if pkt[:1] == b"{":
                self._on_status(pkt)
                continue
            why = check_packets(pkt)
            if why:
                self.stats.rejected[why] += 1
                continue
            self.stats.frames += 1
            self.stats.packets += _count(pkt)
            self._last_good = time.monotonic()
            self.publish(self.tm_topic, pkt)

    # --- the node's status ------------------------------------------------------------
    def _on_status(self, data: bytes) -> None:
        try:
            st = json.loads(data)
        except ValueError:
            st = None
        if not isinstance(st, dict) or not isinstance(st.get("state"), str):
            self.stats.rejected["bad_status"] += 1
            return
        self.stats.statuses += 1
        self._last_good = time.monotonic()
        self.last_status = st
        self.online = st["state"] == "online"
        if self.publish_status:
            self.publish_status(self.status_topic, data)

    def offline_status(self, reason: str) -> bytes:
        """The node's last status with state "offline", published by the gateway for it."""
        st = dict(self.last_status or {}, state="offline", via="gateway", reason=reason)
        return json.dumps(st).encode()

    def _went_offline(self, reason: str) -> None:
        if not self.online:
            return
        self.online = False
        self.stats.offline += 1
        log.warning("gateway %s: node offline (%s)", self.node, reason)
        if self.publish_status:
            self.publish_status(self.status_topic, self.offline_status(reason))

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            if self._ser is None:
                try:
                    s = self._open_port()
                except (serial.SerialException, OSError) as e:
                    # say it once per outage (a mistyped port must not look like a quiet node)
                    (log.debug if self.stats.open_failures else log.warning)(
                        "gateway %s: cannot open %s: %s; retrying", self.node, self.port, e)
                    self.stats.open_failures += 1
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                with self._wlock:
                    self._ser = s
                self.stats.open_failures = 0
                if self.stats.disconnects:
                    self.stats.reconnects += 1
                backoff = 0.1
                self.connected.set()
                log.info("gateway %s: port %s open", self.node, self.port)
            if self.online and time.monotonic() - self._last_good > self.offline_after:
                self._went_offline(f"no frame for {self.offline_after:g} s")
            try:
                data = self._ser.read(max(1, self._ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                log.warning("gateway %s: port %s lost: %s", self.node, self.port, e)
                self.stats.disconnects += 1
                if self._buf:
                    self.stats.rejected["truncated"] += 1
                    self._buf.clear()
                with self._wlock:
                    self._close()
                self._went_offline("serial port lost")
                continue
            if data:
                self.feed(data)


def _count(data: bytes) -> int:
    n = off = 0
    while off < len(data):
        off += ccsds.peek(data, off)[3]
        n += 1
    return n


def main_gateway(args: argparse.Namespace) -> int:
    """`lunabase gateway`: run until Ctrl-C, logging the counters every 10 s."""
    try:
        return main_gateway_until(args, threading.Event())
    except KeyboardInterrupt:
        return 0


def main_gateway_until(args: argparse.Namespace, stop: threading.Event, report_every: float = 10.0) -> int:
    """Run the gateway described by the CLI `args` until `stop` is set."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from wire.brokerurl import BrokerUrl

    b = BrokerUrl.parse(args.broker, schemes=("mqtt", "mqtts"))
    ca = getattr(args, "ca", None)
    if b.tls and not ca:
        raise SystemExit(f"--broker {b}: mqtts needs --ca (the site CA certificate)")
    user, password = b.username or "", b.password or ""
    site = args.site
    if args.inventory:
        from wire.inventory import Inventory

        inv = Inventory.load(args.inventory)
        site = site or inv.site
        if not user:
            user, password = args.node, inv.node(args.node).password
    site = site or "lunabase"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gateway-{args.node}")
    if user:
        client.username_pw_set(user, password)
    if b.tls:
        import ssl

        client.tls_set_context(ssl.create_default_context(cafile=ca))  # verified: CERT_REQUIRED, host name
    gw = Gateway(args.port, site, args.node, lambda t, p: client.publish(t, p, qos=1), baudrate=args.baud,
                 publish_status=lambda t, p: client.publish(t, p, qos=1, retain=True),
                 offline_after=getattr(args, "offline_after", 30.0))
    # a gateway that dies leaves the node unreachable: the broker says so for it
    client.will_set(gw.status_topic, gw.offline_status("gateway lost"), qos=1, retain=True)

    def on_connect(c: Any, ud: Any, flags: Any, rc: Any, props: Any = None) -> None:
        c.subscribe(gw.cmd_topic, qos=1)

    def on_message(c: Any, ud: Any, msg: Any) -> None:
        gw.on_command(bytes(msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async(b.host, b.port, keepalive=30)
    client.loop_start()
    gw.start()
    print(f"gateway: {args.port} <-> {gw.tm_topic} / {gw.cmd_topic} on {b.host}:{b.port}", flush=True)
    try:
        while not stop.wait(report_every):
            s = gw.stats
            print(f"gateway: {s.frames} frames, {s.packets} packets, {s.statuses} statuses, {s.commands} commands, "
                  f"{s.disconnects} disconnects, rejected {dict(s.rejected)}", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        gw.stop()
        if gw.online:  # a clean stop sends no will: say it ourselves
            try:
                client.publish(gw.status_topic, gw.offline_status("gateway stopped"), qos=1, retain=True).wait_for_publish(5)
            except (RuntimeError, ValueError):
                pass  # not connected to the broker: the will was never needed either
        client.loop_stop()
        client.disconnect()
    return 0

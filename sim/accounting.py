"""The simulator's own view of delivery: it subscribes to every node's ``tm`` and
``status`` topics and counts, per node, what arrived.

- *produced*: from the node's own sequence counts — per APID, the highest sequence
  count seen (unwrapped past ``ccsds.SEQ_MASK``) plus one; a fresh node starts every APID at 0 and
  keeps its counts contiguous across resets (firmware journal), so every count below the
  highest one delivered was produced.  A node whose data dir survived from an earlier
  run (``fresh = False``) is counted from the first sequence count seen instead.  Packets made after the last one delivered are
  still in the node's journal (``pending``, from the last HK ``journal_depth``).
- *delivered*: distinct (APID, sequence count) received; *duplicated*: received again.
- *dropped*: the node's own ``journal_dropped`` (oldest packets discarded when the
  journal was full), from its latest HK packet.
- *missing*: produced − delivered.
- *lost*: missing − dropped (never below 0): gone without the node knowing (e.g. a
  payload corrupted on the link and rejected by the decoder).
- *dropped_delivered*: dropped − missing (never below 0).  The node counts every
  unacknowledged packet of a journal segment it discards; a packet whose MQTT message
  reached the broker but whose PUBACK was lost when the link was cut is counted as
  dropped although the ground has it.  On a link with light time that can be a few
  messages' worth per cut; with no delay it is rare.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from wire import ccsds, topics
from wire.ccsds import SEQ_MOD
from wire.defs import APID_EVENT, APID_HK, APID_SEISMIC
from wire.dictionary import Dictionary, PacketDef, load

log = logging.getLogger("sim.accounting")

MODES = ("DAY", "NIGHT", "EMERGENCY", "SAFE")
EVENT_NAMES: dict[int, str] = {}


@dataclass
class Decoded:
    """One packet the oracle accepted: header facts and its numeric fields (engineering units)."""

    apid: int
    seq: int
    ticks: int
    values: dict[str, float]
    peak: float = 0.0  # largest |sample| of a sample block, in its unit


def decode(payload: bytes, dictionary: Dictionary) -> tuple[list[Decoded], list[tuple[int, int]]]:
    """Decode one MQTT payload with the wire contract alone: (packets, rejected byte ranges).

    Deliberately not the ground's parser, so the simulator's delivery figures are an
    independent oracle for it: a packet counts when its header is a TM packet of a known
    APID with the dictionary's length and its CRC holds; anything else is skipped a byte
    at a time until a packet starts, and the skipped bytes form one rejected range.
    """
    packets: list[Decoded] = []
    rejected: list[tuple[int, int]] = []
    n, p, bad = len(payload), 0, -1
    while p < n:
        pdef = _packet_at(payload, p, dictionary)
        if pdef is None:
            if bad < 0:
                bad = p
            p += 1
            continue
        if bad >= 0:
            rejected.append((bad, p))
            bad = -1
        packets.append(_decode_one(payload, p, pdef))
        p += pdef.length
    if bad >= 0:
        rejected.append((bad, n))
    return packets, rejected


def _packet_at(buf: bytes, p: int, dictionary: Dictionary) -> PacketDef | None:
    if len(buf) - p < ccsds.HEADER_LEN + ccsds.CRC_LEN:
        return None
    ptype, apid, _seq, total, _c, _f = ccsds.peek(buf, p)
    if buf[p] >> 5 != ccsds.VERSION or ptype != ccsds.TYPE_TM or not (buf[p] >> 3) & 1:
        return None
    if not dictionary.has_apid(apid):
        return None
    pdef = dictionary.packet(apid)
    if total != pdef.length or p + total > len(buf) or not ccsds.check(buf, p, total):
        return None
    return pdef


# per packet definition: one Struct for all its numeric fields (pad bytes between them),
# their names, scales and offsets, and the Struct of its sample block
_PLANS: dict[int, tuple[struct.Struct, int, tuple[tuple[str, float, float], ...], struct.Struct | None]] = {}


def _plan(pdef: PacketDef) -> tuple[struct.Struct, int, tuple[tuple[str, float, float], ...], struct.Struct | None]:
    key = id(pdef)
    plan = _PLANS.get(key)
    if plan is None:
        fields = sorted(pdef.numeric_fields, key=lambda f: f.offset)
        fmt, at = ">", fields[0].offset if fields else 0
        for f in fields:
            fmt += "x" * (f.offset - at) + f.struct_code
            at = f.offset + f.size
        s = pdef.samples
        samples = struct.Struct(f">{s.count * len(s.axes)}{s.struct_code}") if s is not None and s.count else None
        plan = (struct.Struct(fmt), fields[0].offset if fields else 0,
                tuple((f.name, f.scale, f.add) for f in fields), samples)
        _PLANS[key] = plan
    return plan


def _decode_one(buf: bytes, p: int, pdef: PacketDef) -> Decoded:
    _t, apid, seq, _n, coarse, fine = ccsds.peek(buf, p)
    st, first, fields, samples = _plan(pdef)
    # raw * scale + add: what Field.to_eng computes
    values = {name: raw * scale + add for (name, scale, add), raw in zip(fields, st.unpack_from(buf, p + first), strict=True)}
    peak = 0.0
    s = pdef.samples
    if samples is not None and s is not None:
        raw_samples = samples.unpack_from(buf, p + s.offset)
        peak = max(max(raw_samples), -min(raw_samples)) * s.scale  # the largest |sample|
    return Decoded(apid, seq, (coarse << 16) | fine, values, peak)


@dataclass
class ApidCount:
    seqs: dict[int, int] = field(default_factory=dict)  # unwrapped sequence count -> time tag (ticks)
    last: int = -1  # last unwrapped count received (reference for unwrapping)
    duplicates: int = 0
    lo: int = -1  # lowest and highest unwrapped count seen: report() is O(1) per APID, not O(packets)
    hi: int = -1

    def window(self, t0: int, t1: int) -> tuple[int, int]:
        """(produced, delivered) among packets time-tagged in [t0, t1] (ticks): produced is
        the span of sequence counts from the first to the last delivered one."""
        inside = [u for u, t in self.seqs.items() if t0 <= t <= t1]
        if not inside:
            return 0, 0
        return max(inside) - min(inside) + 1, len(inside)

    def add(self, seq: int, ticks: int = 0) -> None:
        if self.last < 0:
            u = seq
        else:
            base = self.last - (self.last % SEQ_MOD)
            cands = (base + seq - SEQ_MOD, base + seq, base + seq + SEQ_MOD)
            u = min((c for c in cands if c >= 0), key=lambda c: abs(c - self.last))
        if u in self.seqs:
            self.duplicates += 1
        else:
            self.seqs[u] = ticks
            if self.hi < 0:
                self.lo = self.hi = u
            elif u > self.hi:
                self.hi = u
            elif u < self.lo:
                self.lo = u
        self.last = max(self.last, u) if abs(u - self.last) < SEQ_MOD // 2 else u

    @property
    def produced(self) -> int:
        return self.hi + 1 if self.seqs else 0

    @property
    def span(self) -> int:
        """Sequence counts from the first to the last one seen."""
        return self.hi - self.lo + 1 if self.seqs else 0


@dataclass
class NodeCount:
    """What the subscriber saw of one node."""

    node: str
    apids: dict[int, ApidCount] = field(default_factory=dict)
    messages: int = 0
    rejected_bytes: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    hk_ticks: int = -1
    hk: dict[str, float] = field(default_factory=dict)
    hk_modes: list[str] = field(default_factory=list)  # distinct successive HK modes
    status: dict[str, Any] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # EVENT packets by code name
    seismic_peak: float = 0.0  # largest |sample| seen (µm/s²)
    fresh: bool = True  # the node started with an empty journal (sequence counts from 0)
    statuses: list[tuple[str, str]] = field(default_factory=list)  # (state, mode) changes
    last_rx: float = 0.0

    @property
    def produced(self) -> int:
        if not self.fresh:
            return sum(a.span for a in self.apids.values())
        return sum(a.produced for a in self.apids.values())

    @property
    def delivered(self) -> int:
        return sum(len(a.seqs) for a in self.apids.values())

    @property
    def duplicated(self) -> int:
        return sum(a.duplicates for a in self.apids.values())

    @property
    def dropped(self) -> int:
        return int(self.hk.get("journal_dropped", 0))

    @property
    def missing(self) -> int:
        return self.produced - self.delivered

    @property
    def lost(self) -> int:
        return max(0, self.missing - self.dropped)

    @property
    def mode(self) -> str | None:
        m = self.hk.get("mode")
        return MODES[int(m)] if m is not None and 0 <= int(m) < 4 else None

    def keys(self) -> set[tuple[int, int, int]]:
        """(APID, 14-bit sequence count, time tag ticks) of every distinct packet seen."""
        return {(a, u % SEQ_MOD, t) for a, ac in self.apids.items() for u, t in ac.seqs.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "delivered": self.delivered,
            "missing": self.missing,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "dropped_oldest": self.dropped,
            "dropped_delivered": max(0, self.dropped - self.missing),
            "pending": int(self.hk.get("journal_depth", 0)),
            "messages": self.messages,
            "rejected_bytes": self.rejected_bytes,
            "mode": self.mode,
            "status": self.status.get("state"),
            "boots": int(self.hk.get("boot_count", 0)),
            "seismic_peak": round(self.seismic_peak, 2),
        }


class Accounting:
    """Subscribes (its own thread: :class:`_Subscriber`) to ``lunabase/<site>/+/tm`` and ``.../status``."""

    def __init__(self, host: str, port: int, site: str, user: str = "", password: str = "", client_id: str = "") -> None:
        self.host, self.port, self.site = host, port, site
        self.user, self.password = user, password
        self.client_id = client_id or f"lunabase-sim-acct-{time.monotonic_ns() % 10**9}"
        self.tls: Any = None  # an ssl.SSLContext for an mqtts broker (verified)
        self.nodes: dict[str, NodeCount] = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self._client: Any = None
        self.dictionary = load()
        EVENT_NAMES.update(self.dictionary.enums.get("event", {}))

    def node(self, node: str) -> NodeCount:
        with self.lock:
            if node not in self.nodes:
                self.nodes[node] = NodeCount(node)
            return self.nodes[node]

    def start(self) -> Accounting:
        self._client = _Subscriber(self, [topics.topic(self.site, "+", topics.TM), topics.topic(self.site, "+", topics.STATUS)])
        self._client.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def stop(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client = None

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self.feed(topic, payload)
        except Exception:  # never kill the subscriber's thread
            log.exception("accounting: could not process a message on %s", topic)

    def feed(self, topic: str, payload: bytes) -> None:
        """Account one MQTT message (also usable without a broker, in tests)."""
        parts = topics.split(topic)
        if parts is None:
            return
        _, node, kind = parts
        nc = self.node(node)
        if kind == topics.STATUS:
            try:
                st = json.loads(payload)
            except ValueError:
                return
            with self.lock:
                nc.status = st if isinstance(st, dict) else {}
                key = (str(nc.status.get("state")), str(nc.status.get("mode")))
                if not nc.statuses or nc.statuses[-1] != key:
                    nc.statuses.append(key)
            return
        if kind != topics.TM:
            return
        packets, rejected = decode(payload, self.dictionary)
        with self.lock:
            nc.messages += 1
            nc.last_rx = time.monotonic()
            for a, b in rejected:
                nc.rejected_bytes += b - a
                nc.rejected["undecodable"] = nc.rejected.get("undecodable", 0) + 1
            for pk in packets:
                ac = nc.apids.get(pk.apid)
                if ac is None:
                    ac = nc.apids[pk.apid] = ApidCount()
                dups = ac.duplicates
                ac.add(pk.seq, pk.ticks)
                fresh = ac.duplicates == dups
                if pk.apid == APID_EVENT and fresh:
                    code = int(pk.values["code"])
                    name = EVENT_NAMES.get(code, str(code))
                    nc.events[name] = nc.events.get(name, 0) + 1
                elif pk.apid == APID_SEISMIC:
                    nc.seismic_peak = max(nc.seismic_peak, pk.peak)
                elif pk.apid == APID_HK:
                    vals = pk.values
                    m = vals.get("mode")
                    if m is not None and 0 <= int(m) < 4:
                        name = MODES[int(m)]
                        if not nc.hk_modes or nc.hk_modes[-1] != name:
                            nc.hk_modes.append(name)
                    if pk.ticks >= nc.hk_ticks or vals.get("boot_count", 0) > nc.hk.get("boot_count", 0):
                        nc.hk_ticks = pk.ticks
                        nc.hk = vals

    def report(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {n: c.summary() for n, c in sorted(self.nodes.items())}

    def keys(self, node: str) -> set[tuple[int, int, int]]:
        """The distinct packets seen of node (see NodeCount.keys)."""
        with self.lock:
            c = self.nodes.get(node)
            return c.keys() if c is not None else set()


class _Subscriber:
    """The accounting's MQTT 3.1.1 subscriber: one thread, one blocking socket.

    paho's client read a message in three or more ``recv`` calls with a ``select`` and
    its locks between them, and sent each PUBACK on its own: ~150 µs of the simulator's
    CPU per message, a third of a millisecond per node per second (more than the broker).
    This reads whatever has arrived (up to 256 kB per ``recv``), handles every complete
    packet in it and sends their PUBACKs in one write.  A persistent session
    (clean session 0, a fixed client id): messages published while it reconnects are
    queued by the broker.  Reconnects 1 s after any error until :meth:`stop`.
    """

    KEEPALIVE = 30

    def __init__(self, acct: Accounting, filters: list[str]) -> None:
        self.acct = acct
        self.filters = filters
        self._stop = threading.Event()
        self._sock: Any = None
        self._thread = threading.Thread(target=self._run, name="sim-accounting", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's recv
            except OSError:
                pass
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except (OSError, ValueError) as e:
                if not self._stop.is_set():
                    log.info("accounting: broker connection lost (%s), reconnecting", e)
            finally:
                self.acct.connected.clear()
                sock, self._sock = self._sock, None
                if sock is not None:
                    sock.close()
            self._stop.wait(1.0)

    @staticmethod
    def _str(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b

    @staticmethod
    def _packet(kind: int, body: bytes) -> bytes:
        n = len(body)
        out = bytearray([kind])
        while True:
            d, n = n & 0x7F, n >> 7
            out.append(d | (0x80 if n else 0))
            if not n:
                return bytes(out) + body

    def _session(self) -> None:
        a = self.acct
        sock = socket.create_connection((a.host, a.port), timeout=10)
        self._sock = sock
        if a.tls is not None:
            sock = a.tls.wrap_socket(sock, server_hostname=a.host)
            self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0  # clean session 0: a persistent session
        payload = self._str(a.client_id.encode())
        if a.user:
            flags |= 0x80 | 0x40
            payload += self._str(a.user.encode()) + self._str(a.password.encode())
        sock.sendall(self._packet(0x10, self._str(b"MQTT") + bytes([4, flags]) + struct.pack(">H", self.KEEPALIVE) + payload))
        subs = b"".join(self._str(f.encode()) + b"\x01" for f in self.filters)
        sock.settimeout(self.KEEPALIVE / 2)
        buf = b""
        while not self._stop.is_set():
            try:
                data = sock.recv(262144)
            except TimeoutError:
                sock.sendall(b"\xc0\x00")  # PINGREQ: nothing came for keepalive / 2
                continue
            if not data:
                raise OSError("connection closed by the broker")
            buf = buf + data if buf else data
            acks = []
            p, n = 0, len(buf)
            while n - p >= 2:
                t = buf[p]
                ln = sh = 0
                q = p + 1
                while q < n:
                    b = buf[q]
                    q += 1
                    ln |= (b & 0x7F) << sh
                    sh += 7
                    if not b & 0x80:
                        break
                    if sh > 21:
                        raise ValueError("bad MQTT remaining length")
                else:
                    break  # the length is not complete yet
                if buf[q - 1] & 0x80 or n - q < ln:
                    break  # the packet is not complete yet
                end = q + ln
                kind = t & 0xF0
                if kind == 0x30:  # PUBLISH
                    qos = (t >> 1) & 3
                    tl = (buf[q] << 8) | buf[q + 1]
                    topic = buf[q + 2 : q + 2 + tl].decode(errors="replace")
                    body = q + 2 + tl
                    if qos:
                        acks.append(buf[body : body + 2])
                        body += 2
                    a._on_message(topic, buf[body:end])
                elif kind == 0x20:  # CONNACK
                    if ln < 2 or buf[q + 1]:
                        raise OSError(f"the broker refused the accounting's CONNECT (return code {buf[q + 1] if ln >= 2 else '?'})")
                    sock.sendall(self._packet(0x82, b"\x00\x01" + subs))
                elif kind == 0x90:  # SUBACK
                    if any(x == 0x80 for x in buf[q + 2 : end]):
                        raise OSError("the broker refused the accounting's subscription")
                    a.connected.set()
                p = end
            buf = buf[p:] if p < n else b""
            if acks:
                sock.sendall(b"".join(b"\x40\x02" + pid for pid in acks))

# A small MQTT 3.1.1 client written for this firmware, on asyncio streams.
#
# Lessons taken from umqtt and mqtt_as: never block the loop (every read and write is
# awaited, connects time out); a refused port only shows on the first read, so CONNECT
# is always followed by a timed read of CONNACK; CONNACK byte 0 bit 0 is Session
# Present, which a clean_session=0 client must accept; packets bigger than the receive
# buffer are read and discarded (counted), never allocated (MemoryError on big messages
# is the classic umqtt failure).  What to send and when to reconnect is link.py's job;
# this module encodes, decodes and moves bytes.
#
# Encoders write into a caller's bytearray and return the length: exact-byte tests in
# tests/firmware/test_mqtt_codec.py run them on the MicroPython VM.
import asyncio
import time
from micropython import const

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)
SUBACK = const(0x90)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)

_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"


class MQTTError(OSError):
    pass


def put_len(buf, off, n):
    # MQTT "remaining length" varint at buf[off]; returns the offset after it
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[off] = b | 0x80
            off += 1
        else:
            buf[off] = b
            return off + 1


def put_str(buf, off, s):
    # u16 length + bytes
    n = len(s)
    buf[off] = n >> 8
    buf[off + 1] = n & 0xFF
    buf[off + 2 : off + 2 + n] = s
    return off + 2 + n


def len_len(n):
    # bytes the varint for n takes
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def enc_connect(buf, client_id, keepalive, clean, user=b"", password=b"", will_topic=b"", will_msg=b"", will_qos=1, will_retain=True):
    rem = 10 + 2 + len(client_id)
    flags = 0x02 if clean else 0
    if will_topic:
        rem += 4 + len(will_topic) + len(will_msg)
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
    if user:
        rem += 2 + len(user)
        flags |= 0x80
        if password:
            rem += 2 + len(password)
            flags |= 0x40
    buf[0] = CONNECT
    o = put_len(buf, 1, rem)
    o = put_str(buf, o, b"MQTT")
    buf[o] = 4  # protocol level 3.1.1
    buf[o + 1] = flags
    buf[o + 2] = keepalive >> 8
    buf[o + 3] = keepalive & 0xFF
    o = put_str(buf, o + 4, client_id)
    if will_topic:
        o = put_str(buf, o, will_topic)
        o = put_str(buf, o, will_msg)
    if user:
        o = put_str(buf, o, user)
        if password:
            o = put_str(buf, o, password)
    return o


def enc_publish_head(buf, topic, payload_len, qos=0, retain=False, dup=False, pid=0):
    # fixed header + topic (+ packet id); the payload is written after it
    rem = 2 + len(topic) + payload_len + (2 if qos else 0)
    buf[0] = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    o = put_len(buf, 1, rem)
    o = put_str(buf, o, topic)
    if qos:
        buf[o] = pid >> 8
        buf[o + 1] = pid & 0xFF
        o += 2
    return o


def enc_puback(buf, pid):
    buf[0] = PUBACK
    buf[1] = 2
    buf[2] = pid >> 8
    buf[3] = pid & 0xFF
    return 4


def enc_subscribe(buf, pid, topic, qos=1):
    buf[0] = SUBSCRIBE
    o = put_len(buf, 1, 2 + 2 + len(topic) + 1)
    buf[o] = pid >> 8
    buf[o + 1] = pid & 0xFF
    o = put_str(buf, o + 2, topic)
    buf[o] = qos
    return o + 1


def dec_connack(body):
    # CONNACK variable header -> (session_present, return_code)
    return body[0] & 1, body[1]


def dec_publish(flags, body, n):
    # PUBLISH -> (qos, dup, retain, topic_start, topic_end, pid, payload_start)
    tl = (body[0] << 8) | body[1]
    ts = 2
    te = 2 + tl
    qos = (flags >> 1) & 3
    pid = 0
    p = te
    if qos:
        pid = (body[te] << 8) | body[te + 1]
        p = te + 2
    if p > n:
        raise MQTTError("PUBLISH shorter than its topic")
    return qos, (flags >> 3) & 1, flags & 1, ts, te, pid, p


class Client:
    # One broker connection at a time.  Callbacks (plain functions, not coroutines):
    #   on_puback(pid), on_message(topic_mv, payload_mv, dup) -> True to PUBACK now.
    def __init__(self, client_id, keepalive, user, password, will_topic, will_msg, rx_max, on_puback, on_message):
        self.client_id = client_id.encode()
        self.keepalive = keepalive
        self.user = user.encode()
        self.password = password.encode()
        self.will_topic = will_topic.encode()
        self.will_msg = will_msg.encode()
        self.rx = bytearray(rx_max)
        self.rxmv = memoryview(self.rx)
        # fixed header + topic + packet id of an outgoing PUBLISH (longest topic: status)
        self.hdr = bytearray(8 + len(will_topic) + 8)
        self.small = bytearray(8)  # PUBACK
        self.r = None
        self.w = None
        self.connected = False
        self.session_present = 0
        self.last_rx = time.ticks_ms()
        self.last_tx = time.ticks_ms()
        self.oversize = 0  # incoming packets discarded for size
        self.lock = asyncio.Lock()
        self.on_puback = on_puback
        self.on_message = on_message
        self.n = 0
        self.oversize_pid = 0
        self._ssl = None

    async def connect(self, host, port, ca=None, timeout_ms=10000, clean=False, tls_host=None):
        # -> session_present; raises OSError / MQTTError / ValueError (a certificate the CA
        # did not sign or not for tls_host; caller backs off).  ca: the CA certificate (DER)
        # for mqtts, verified (CERT_REQUIRED); None = plain MQTT
        self.close()
        if ca is not None:
            ctx = self._ssl
            if ctx is None:  # one context for every reconnect
                import ssl  # pyright: ignore[reportMissingImports]

                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=ca)
                self._ssl = ctx
            self.r, self.w = await asyncio.wait_for_ms(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=tls_host or host), timeout_ms)
        else:
            self.r, self.w = await asyncio.wait_for_ms(asyncio.open_connection(host, port), timeout_ms)
        buf = bytearray(
            32 + len(self.client_id) + len(self.user) + len(self.password) + len(self.will_topic) + len(self.will_msg)
        )
        n = enc_connect(buf, self.client_id, self.keepalive, clean, self.user, self.password, self.will_topic, self.will_msg)
        await self._write(buf, n)
        # the unix port "connects" to a refused port: the error surfaces here
        t = await asyncio.wait_for_ms(self._read_packet(), timeout_ms)
        if t & 0xF0 != CONNACK:
            raise MQTTError("expected CONNACK, got 0x%02x" % t)
        sp, rc = dec_connack(self.rx)
        if rc:
            raise MQTTError("broker refused CONNECT, return code %d" % rc)
        self.session_present = sp
        self.connected = True
        self.last_rx = self.last_tx = time.ticks_ms()
        return sp

    async def _write(self, buf, n):
        w = self.w
        if w is None:
            raise MQTTError("not connected")
        w.write(memoryview(buf)[:n])
        await w.drain()

    async def _readinto(self, a, b):
        mv = self.rxmv
        r = self.r
        if r is None:
            raise MQTTError("not connected")
        while a < b:
            n = await r.readinto(mv[a:b])
            if not n:
                raise MQTTError("connection closed by broker")
            a += n

    async def _read_packet(self):
        # one packet into self.rx; returns the first byte, sets self.n (body length).
        # Every packet has at least 2 bytes: type and length are read together (each read
        # is a pass through the event loop: a PUBACK takes 2 instead of 3)
        await self._readinto(0, 2)
        t = self.rx[0]
        b = self.rx[1]
        n = 0
        sh = 0
        while True:
            if sh:
                await self._readinto(0, 1)
                b = self.rx[0]
            n |= (b & 0x7F) << sh
            sh += 7
            if not b & 0x80:
                break
            if sh > 21:
                raise MQTTError("bad remaining length")
        cap = len(self.rx)
        if n <= cap:
            await self._readinto(0, n)
            self.n = n
        else:
            # too big: keep the first bufferful (topic, packet id), drop the rest
            await self._readinto(0, cap)
            left = n - cap
            self.oversize += 1
            pid = 0
            if t & 0xF0 == PUBLISH and (t >> 1) & 3:
                tl = (self.rx[0] << 8) | self.rx[1]
                if tl + 4 <= cap:
                    pid = (self.rx[tl + 2] << 8) | self.rx[tl + 3]
            while left:
                k = min(left, 64)
                await self._readinto(cap - k, cap)
                left -= k
            self.n = -1
            self.oversize_pid = pid
        self.last_rx = time.ticks_ms()
        return t

    async def reader(self):
        # read until the connection breaks; dispatches to the callbacks
        try:
            while self.connected:
                t = await self._read_packet()
                k = t & 0xF0
                if k == PUBACK:
                    if self.on_puback:
                        self.on_puback((self.rx[0] << 8) | self.rx[1])
                elif k == PUBLISH:
                    if self.n < 0:
                        if self.oversize_pid:
                            await self.puback(self.oversize_pid)  # rejected, but not redelivered forever
                        continue
                    qos, dup, _ret, ts, te, pid, p = dec_publish(t, self.rx, self.n)
                    if self.on_message:
                        self.on_message(self.rxmv[ts:te], self.rxmv[p : self.n], dup)
                    if qos:
                        await self.puback(pid)
                # PINGRESP and anything else: last_rx is enough
        finally:
            self.close()

    async def send(self, buf, n):
        async with self.lock:
            await self._write(buf, n)
            self.last_tx = time.ticks_ms()

    async def publish(self, topic, payload, plen, qos=1, retain=False, dup=False, pid=0):
        # topic: bytes; payload: a buffer whose first plen bytes are sent
        if not self.connected:
            raise MQTTError("not connected")
        if len(topic) + 8 > len(self.hdr):
            self.hdr = bytearray(len(topic) + 8)  # once per longer topic, never per message
        async with self.lock:
            h = enc_publish_head(self.hdr, topic, plen, qos, retain, dup, pid)
            w = self.w
            if w is None:
                raise MQTTError("not connected")
            # header and payload, then one drain (each drain is a pass through the loop)
            w.write(memoryview(self.hdr)[:h])
            w.write(memoryview(payload)[:plen])
            await w.drain()
            self.last_tx = time.ticks_ms()

    async def puback(self, pid):
        async with self.lock:
            enc_puback(self.small, pid)
            await self._write(self.small, 4)
            self.last_tx = time.ticks_ms()

    async def subscribe(self, topic, pid, qos=1):
        buf = bytearray(8 + len(topic))
        n = enc_subscribe(buf, pid, topic, qos)
        await self.send(buf, n)

    async def ping(self):
        await self.send(_PINGREQ, 2)

    async def disconnect(self):
        # clean DISCONNECT: the broker discards the will
        try:
            if self.connected:
                await self.send(_DISCONNECT, 2)
        finally:
            self.close()

    def close(self):
        self.connected = False
        w = self.w
        self.w = self.r = None
        if w:
            try:
                w.close()
            except OSError:
                pass

# The broker link: connect (retried forever, exponential backoff with jitter, slower on
# a low battery), birth status, command subscription, then stream the journal as QoS 1
# containers (several packets per MQTT message, up to broker.max_msg bytes) with at most
# broker.window messages in flight.  A packet leaves the journal only when the PUBACK of
# its message arrives; after a reconnect the unacknowledged messages are re-sent with DUP
# and the same packet ids (the broker kept them if CONNACK said Session Present).
# Custody mode (journal.custody_s > 0, docs/custody.md): the PUBACK only frees the window;
# a packet leaves the journal when the ground's custody acknowledgement (on the cmd topic)
# covers it, and every new session, or custody_s without progress, sends again from the
# custody point (a broker that crashed may have lost what it acknowledged).
# Keepalive: PINGREQ when idle for keepalive/2; no bytes from the broker for 1.5 x
# keepalive = dead broker -> reconnect.  Hibernation (NIGHT / EMERGENCY): after a short
# contact the node publishes a retained "asleep" status with next_contact, disconnects
# cleanly (which suppresses the will) and stays offline until then.
import asyncio
import json
import random
import time
from micropython import const
from wire import defs, topics
from lunanode import mqtt
from lunanode.power import NAMES

_FREE = const(0)
_JOURNAL = const(1)
_OTHER = const(2)  # replay / status: not tied to the journal


class Link:
    def __init__(self, app):
        self.app = app
        cfg = app.cfg
        b = cfg["broker"]
        self.b = b
        site = cfg["site"]
        node = cfg["node"]
        self.t_tm = topics.topic(site, node, topics.TM).encode()
        self.t_status = topics.topic(site, node, topics.STATUS)
        self.t_cmd = topics.topic(site, node, topics.CMD).encode()
        self.client = mqtt.Client(node, b["keepalive"], b["user"], b["password"], self.t_status, "", b["rx_max"],
                                  self._on_puback, self._on_message)
        self.ca = None  # the broker's CA (DER), read once: mqtts verifies against it
        if b["tls"]:
            with open(b["ca"], "rb") as f:
                self.ca = f.read()
        w = b["window"]
        self.w = w
        self.kind = [0] * w
        self.pid = [0] * w
        self.seg = [0] * w
        self.off = [0] * w
        self.end = [0] * w
        self.npk = [0] * w
        self.order = [0] * w
        self.done = [False] * w
        self.seqno = 0  # send order
        self.next_pid = 0
        self.tx = bytearray(b["max_msg"])
        self.state = defs.LINK_STATE_DOWN
        self.reconnects = 0
        self.connects = 0
        self.attempt = 0
        self.kick = asyncio.Event()
        self.next_contact = 0  # wire-epoch s of the next contact while asleep (0: continuous)
        self.replay = None  # [apid, from_seq, count, cursor]
        self.status_pid = 0
        self.status_acked = False
        self.sent_msgs = 0
        self.last_error = ""

    # -- bookkeeping ---------------------------------------------------------------------
    def _pid(self):
        while True:
            self.next_pid = self.next_pid % 65535 + 1
            p = self.next_pid
            if p != self.status_pid and p not in self.pid:
                return p

    def _free(self):
        for i in range(self.w):
            if self.kind[i] == _FREE:
                return i
        return -1

    def _oldest(self):
        j = -1
        for i in range(self.w):
            if self.kind[i] != _FREE and (j < 0 or self.order[i] < self.order[j]):
                j = i
        return j

    def _on_puback(self, pid):
        if pid == self.status_pid:
            self.status_acked = True
            return
        for i in range(self.w):
            if self.kind[i] != _FREE and self.pid[i] == pid:
                self.done[i] = True
        # release in send order so the journal's acknowledgement point only moves forward
        while True:
            i = self._oldest()
            if i < 0 or not self.done[i]:
                break
            if self.kind[i] == _JOURNAL:
                self.app.journal.ack(self.seg[i], self.end[i], self.npk[i])
            self.kind[i] = _FREE
            self.pid[i] = 0
        self.kick.set()

    def _on_message(self, topic, payload, dup):
        self.app.tc.on_message(topic, payload, dup)

    def inflight(self):
        n = 0
        for k in self.kind:
            if k != _FREE:
                n += 1
        return n

    def request_replay(self, apid, frm, count):
        self.replay = [apid, frm, count, [0, 0]]
        self.kick.set()
        return True

    # -- status ----------------------------------------------------------------------------
    def status_json(self, state):
        a = self.app
        return json.dumps(
            {
                "state": state,
                "mode": NAMES[a.power.mode],
                "boot": a.health.boots,
                "next_contact": self.next_contact if state == "asleep" else 0,
                "hk_period": a.sched.hk_period() // 1000,
                "dict_crc": defs.DICT_CRC,
                "fw": a.version,
                "custody": a.journal.cu[4:],  # confirmed, re-sends, rejected acks, dropped-through x 8
                # what the journal can hold: the ground's refiller does not ask for older gaps
                "journal_bytes": a.journal.seg_bytes * a.journal.max_segs,
            }
        )

    async def _publish_status(self, state):
        s = self.status_json(state).encode()
        self.status_pid = self._pid()
        self.status_acked = False
        await self.client.publish(self.t_status.encode(), s, len(s), 1, True, False, self.status_pid)

    # -- main loop -------------------------------------------------------------------------
    def _backoff_ms(self):
        b = self.b
        d = b["backoff_min_ms"] << min(self.attempt, 16)
        d = min(d, b["backoff_max_ms"])
        if self.app.power.low_battery():
            d *= self.app.cfg["power"]["low_backoff_factor"]
        return d * random.randint(75, 125) // 100  # +-25 % jitter: nodes don't stampede

    async def run(self):
        while True:
            await self._connect()
            sleep_s = 0
            try:
                sleep_s = await self._session()
            except Exception as e:  # OSError, MQTTError, TimeoutError: reconnect
                self.last_error = repr(e)
            self.client.close()
            self.app.board_log("link down: " + self.last_error if not sleep_s else "link asleep %d s" % sleep_s)
            if self.state == defs.LINK_STATE_UP:
                self.app.events.emit(defs.EVENT_LINK_DOWN, defs.SEVERITY_INFO if sleep_s else defs.SEVERITY_WARNING,
                                     1 if sleep_s else 0, self.inflight(), "sleep" if sleep_s else self.last_error[:24])
            self.state = defs.LINK_STATE_DOWN
            if sleep_s:
                await self._sleep(sleep_s)
            else:
                await asyncio.sleep_ms(self._backoff_ms() // 4)

    async def _connect(self):
        a = self.app
        b = self.b
        while True:
            self.state = defs.LINK_STATE_CONNECTING
            try:
                if not await a.board.net_up():
                    raise OSError("network down")
                c = self.client
                c.keepalive = a.cfg["power"]["night_keepalive"] if a.power.low_battery() else b["keepalive"]
                c.will_msg = self.status_json("offline").encode()
                sp = await c.connect(b["host"], b["port"], self.ca, b["connect_timeout_ms"], False, b["tls_host"])
                self.connects += 1
                if self.connects > 1:
                    self.reconnects += 1
                self.attempt = 0
                self.session_present = sp
                return
            except Exception as e:
                self.last_error = repr(e)
                self.client.close()
                self.state = defs.LINK_STATE_DOWN
                d = self._backoff_ms()
                self.attempt += 1
                a.board_log("connect failed (%s), retry in %d ms" % (self.last_error, d))
                await asyncio.sleep_ms(d)

    async def _reader(self):
        try:
            await self.client.reader()
        except Exception as e:
            self.last_error = repr(e)
        finally:
            self.kick.set()

    async def _session(self):
        a = self.app
        c = self.client
        j = a.journal
        self.state = defs.LINK_STATE_UP
        self.next_contact = 0
        a.events.emit(defs.EVENT_LINK_UP, defs.SEVERITY_INFO, self.session_present, self.reconnects, "")
        rt = asyncio.create_task(self._reader())
        try:
            await c.subscribe(self.t_cmd, self._pid(), 1)
            await self._publish_status("online")
            if j.cu[0]:  # custody mode
                # custody: everything the ground has not confirmed goes again, from the
                # custody point (the window's messages are part of it)
                for k in range(self.w):
                    if self.kind[k] != _FREE:
                        self.kind[k] = _FREE
                        self.pid[k] = 0
                j.custody_due(True)
            # re-send what the broker has not acknowledged, oldest first, as DUP
            start = self.seqno
            while True:
                i = -1
                for k in range(self.w):
                    if self.kind[k] != _FREE and not self.done[k] and self.order[k] < start and (
                        i < 0 or self.order[k] < self.order[i]
                    ):
                        i = k
                if i < 0:
                    break
                if self.kind[i] == _JOURNAL:
                    n = j.read_range(self.tx, self.seg[i], self.off[i], self.end[i])
                    if n == self.end[i] - self.off[i]:
                        await c.publish(self.t_tm, self.tx, n, 1, False, True, self.pid[i])
                        self.order[i] = self.seqno  # mark as re-sent in this session
                        self.seqno += 1
                        continue
                self.kind[i] = _FREE  # dropped from the journal, or a replay: forget it
                self.pid[i] = 0
            awake_from = time.ticks_ms()
            ka = c.keepalive * 1000
            last_ping = time.ticks_ms()
            while True:
                if not c.connected:
                    raise mqtt.MQTTError(self.last_error or "connection lost")
                now = time.ticks_ms()
                if ka:
                    if time.ticks_diff(now, c.last_rx) > ka * 3 // 2:
                        raise mqtt.MQTTError("broker silent for 1.5 x keepalive")
                    if (time.ticks_diff(now, c.last_tx) >= ka // 2 or time.ticks_diff(now, c.last_rx) >= ka // 2) and \
                            time.ticks_diff(now, last_ping) >= ka // 2:
                        last_ping = now
                        await c.ping()
                if a.power.low_battery():
                    awake = time.ticks_diff(now, awake_from)
                    drained = j.depth == 0 and self.inflight() == 0
                    if (drained and awake >= a.cfg["power"]["awake_s"] * 1000) or awake >= 3 * a.cfg["power"]["awake_s"] * 1000:
                        return await self._go_to_sleep()
                else:
                    awake_from = now
                j.custody_due()
                i = self._free()
                if i >= 0 and self.replay:
                    r = self.replay
                    n, k = j.find(r[0], r[1], r[2], self.tx, len(self.tx), r[3])
                    if not n:
                        self.replay = None
                    else:
                        await self._send(i, _OTHER, 0, 0, 0, 0, n)
                    continue
                if i >= 0 and j.pending():
                    n, k = j.read_batch(self.tx, len(self.tx))
                    if n:
                        await self._send(i, _JOURNAL, j.batch_seg, j.batch_off, j.batch_off + n, k, n)
                        continue
                self.kick.clear()
                try:
                    await asyncio.wait_for_ms(self.kick.wait(), 1000)
                except asyncio.TimeoutError:
                    pass
        finally:
            rt.cancel()

    async def _send(self, i, kind, seg, off, end, npk, n):
        p = self._pid()
        self.kind[i] = kind
        self.pid[i] = p
        self.seg[i] = seg
        self.off[i] = off
        self.end[i] = end
        self.npk[i] = npk
        self.done[i] = False
        self.order[i] = self.seqno
        self.seqno += 1
        self.sent_msgs += 1
        await self.client.publish(self.t_tm, self.tx, n, 1, False, False, p)

    async def _go_to_sleep(self):
        a = self.app
        s = a.power.sleep_s()
        a.clock.update()
        self.next_contact = a.clock.sec + s
        await self._publish_status("asleep")
        t = time.ticks_ms()
        while not self.status_acked and self.client.connected and time.ticks_diff(time.ticks_ms(), t) < 5000:
            await asyncio.sleep_ms(20)
        a.journal.save()
        await self.client.disconnect()
        return s

    async def _sleep(self, s):
        # offline until next contact; wakes early if the mode went back to DAY/SAFE
        a = self.app
        while a.clock.uptime() >= 0:
            a.clock.update()
            if a.clock.sec >= self.next_contact or not a.power.low_battery():
                break
            await asyncio.sleep_ms(500)

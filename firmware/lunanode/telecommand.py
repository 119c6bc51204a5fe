# Telecommands from the cmd topic: authenticated with wire.ccsds.open_tc (HMAC-SHA256,
# per-node key, this node's id and the validity window inside the MAC, strictly
# increasing counter persisted in data/tc before execution, so a reset never re-opens a
# window for replays).  Every command gets ACK packets on the tm topic: ACCEPTED or
# REJECTED (with the reason), then EXECUTED or FAILED.  Rejections are TC_REJECTED
# events.  A QoS 1 redelivery (DUP) of the last accepted command is ignored silently.
# A data/tc that exists but is not a number (corruption) means the node no longer knows
# which counters it saw: it refuses everything (COUNTER_LOST, TC_COUNTER_LOST event with
# a per-boot random nonce) until a TC_RESYNC carrying that nonce re-arms it.
import asyncio
import os
import struct
from micropython import const
from wire import ccsds, defs
from lunanode import store

def _table(pairs, default):
    # {small int: small int} as a bytes table indexed by the key: a dict costs ~250 B of
    # heap, this ~40 (the node has a few KB to spare)
    t = bytearray([default] * (max([k for k, _v in pairs]) + 1))
    for k, v in pairs:
        t[k] = v
    return bytes(t)


# open_tc status -> ACK reason (others: BAD_ARGS)
_REASON = _table((
    (ccsds.TC_BAD_MAC, defs.ACK_REASON_BAD_MAC),
    (ccsds.TC_REPLAY, defs.ACK_REASON_REPLAY),
    (ccsds.TC_BAD_LENGTH, defs.ACK_REASON_BAD_LENGTH),
    (ccsds.TC_BAD_CRC, defs.ACK_REASON_BAD_LENGTH),
    (ccsds.TC_NOT_TC, defs.ACK_REASON_BAD_LENGTH),
    (ccsds.TC_WRONG_NODE, defs.ACK_REASON_WRONG_NODE),
    (ccsds.TC_EXPIRED, defs.ACK_REASON_EXPIRED),
    (ccsds.TC_NOT_YET_VALID, defs.ACK_REASON_NOT_YET_VALID),
), defs.ACK_REASON_BAD_ARGS)
_NO_OP = const(255)
# opcode -> argument bytes (_NO_OP: no such opcode)
_ARGS_LEN = _table((
    (defs.OP_PING, defs.ARGS_PING_LEN),
    (defs.OP_SET_RATE, defs.ARGS_SET_RATE_LEN),
    (defs.OP_SET_MODE, defs.ARGS_SET_MODE_LEN),
    (defs.OP_TIME_SYNC, defs.ARGS_TIME_SYNC_LEN),
    (defs.OP_REBOOT, defs.ARGS_REBOOT_LEN),
    (defs.OP_REPLAY, defs.ARGS_REPLAY_LEN),
    (defs.OP_CLEAR_SAFE, defs.ARGS_CLEAR_SAFE_LEN),
    (defs.OP_TC_RESYNC, defs.ARGS_TC_RESYNC_LEN),
), _NO_OP)
del _table


class Telecommands:
    def __init__(self, app):
        self.app = app
        self.key = app.cfg["key"]
        self.node = app.cfg["node"].encode()
        # absent = 0 (fresh flash); present but not a number = lost
        self.last = 0
        self.nonce = 0  # != 0: counter lost, only TC_RESYNC(nonce) is accepted
        b = store.read("tc")
        if b is not None:
            try:
                self.last = int(b)
            except ValueError:
                self.nonce = (struct.unpack(">I", os.urandom(4))[0] & 0x7FFFFFFF) | 1
                self.lost_event(0)
        self.accepted = 0
        self.rejected = 0
        self.pb = ccsds.PacketBuffer(defs.APID_ACK, defs.ACK_LEN)

    def lost_event(self, counter):
        self.app.events.emit(defs.EVENT_TC_COUNTER_LOST, defs.SEVERITY_CRITICAL, self.nonce, counter, "send TC_RESYNC")

    def ack(self, counter, opcode, stage, reason, seq):
        struct.pack_into(defs.ACK_FMT, self.pb.buf, ccsds.HEADER_LEN, counter & 0xFFFFFFFF, opcode, stage, reason, 0, seq)
        c = self.app.clock
        c.stamp()
        self.app.journal.append(self.pb.finish(c.coarse, c.fine), defs.ACK_LEN)

    def on_message(self, topic, payload, dup):
        # MQTT callback for the cmd topic: payload is one TC or several back to back
        n = len(payload)
        o = 0
        while o < n:
            t = n - o
            if t >= 6:
                t = ((payload[o + 4] << 8) | payload[o + 5]) + 7
                if t > n - o or t < ccsds.TC_OVERHEAD:
                    t = n - o
            self.handle(payload[o : o + t], dup)
            o += t
        self.app.link.kick.set()

    def reject(self, status, opcode, counter, seq):
        self.rejected += 1
        reason = _REASON[status] if status < len(_REASON) else defs.ACK_REASON_BAD_ARGS
        self.ack(counter, opcode, defs.ACK_STAGE_REJECTED, reason, seq)
        self.app.events.emit(defs.EVENT_TC_REJECTED, defs.SEVERITY_WARNING, reason, counter, "tc op %d" % opcode)

    def handle(self, pkt, dup=False):
        if len(pkt) > 6 and (((pkt[0] & 7) << 8) | pkt[1]) == ccsds.CUSTODY_APID:
            # the ground's custody acknowledgement (docs/custody.md): authenticated like a
            # TC but against the journal's own counter (cu[3]); answered by nothing (no ACK,
            # no event: a forged flood must not fill the journal), only counted (cu[6])
            j = self.app.journal
            st, op, counter, a, b, _s = ccsds.open_tc(self.key, self.node, pkt, j.cu[3], 0)
            if st == ccsds.TC_OK and op == 0 and b - a == 16:  # 8 x u16
                j.confirm(counter, pkt, a)
            elif not (st == ccsds.TC_REPLAY and dup):
                j.cu[6] += 1
            return
        c = self.app.clock
        c.update()
        lost = self.nonce != 0
        st, op, counter, a, b, seq = ccsds.open_tc(self.key, self.node, pkt, -1 if lost else self.last, c.sec)
        if st == ccsds.TC_NOT_YET_VALID or st == ccsds.TC_EXPIRED:
            if not lost:
                self._persist(counter)  # authentic and fresh: it must not run later either
            self.reject(st, op, counter, seq)
            return
        if st != ccsds.TC_OK:
            if st == ccsds.TC_REPLAY and dup and counter == self.last:
                return  # broker redelivered what we already executed
            self.reject(st, op, counter, seq)
            return
        if lost:
            if op != defs.OP_TC_RESYNC or b - a != defs.ARGS_TC_RESYNC_LEN or \
                    struct.unpack_from(defs.ARGS_TC_RESYNC, pkt, a)[0] != self.nonce:
                self.rejected += 1
                self.ack(counter, op, defs.ACK_STAGE_REJECTED, defs.ACK_REASON_COUNTER_LOST, seq)
                self.lost_event(counter)
                return
            self.nonce = 0  # re-armed: this counter is the new floor
        if op >= len(_ARGS_LEN) or _ARGS_LEN[op] == _NO_OP:
            self._persist(counter)
            self.rejected += 1
            self.ack(counter, op, defs.ACK_STAGE_REJECTED, defs.ACK_REASON_BAD_OPCODE, seq)
            self.app.events.emit(defs.EVENT_TC_REJECTED, defs.SEVERITY_WARNING, defs.ACK_REASON_BAD_OPCODE, counter, "bad opcode %d" % op)
            return
        if b - a != _ARGS_LEN[op]:
            self._persist(counter)
            self.rejected += 1
            self.ack(counter, op, defs.ACK_STAGE_REJECTED, defs.ACK_REASON_BAD_ARGS, seq)
            self.app.events.emit(defs.EVENT_TC_REJECTED, defs.SEVERITY_WARNING, defs.ACK_REASON_BAD_ARGS, counter, "bad args op %d" % op)
            return
        self._persist(counter)
        self.accepted += 1
        self.ack(counter, op, defs.ACK_STAGE_ACCEPTED, defs.ACK_REASON_OK, seq)
        try:
            ok = self.execute(op, pkt, a, counter, seq)
        except Exception as e:  # a bug must not take the node down
            ok = False
        if ok is None:
            return  # acknowledges itself later (REBOOT)
        self.ack(counter, op, defs.ACK_STAGE_EXECUTED if ok else defs.ACK_STAGE_FAILED,
                 defs.ACK_REASON_OK if ok else defs.ACK_REASON_EXEC_ERROR, seq)
        if ok:
            self.app.events.emit(defs.EVENT_TC_EXECUTED, defs.SEVERITY_INFO, op, counter, "")

    def _persist(self, counter):
        self.last = counter
        store.write_int("tc", counter)

    def execute(self, op, pkt, a, counter, seq):
        app = self.app
        if op == defs.OP_PING:
            return True
        if op == defs.OP_SET_RATE:
            sensor, period = struct.unpack_from(defs.ARGS_SET_RATE, pkt, a)
            return app.sched.set_rate(sensor, period)
        if op == defs.OP_SET_MODE:
            mode, dur = struct.unpack_from(defs.ARGS_SET_MODE, pkt, a)
            return app.power.force(mode, dur)
        if op == defs.OP_TIME_SYNC:
            coarse, fine = struct.unpack_from(defs.ARGS_TIME_SYNC, pkt, a)
            off = app.clock.set(coarse, fine)
            app.events.emit(defs.EVENT_TIME_SYNC, defs.SEVERITY_INFO, off, app.clock.drift, "")
            return True
        if op == defs.OP_REBOOT:
            (delay,) = struct.unpack_from(defs.ARGS_REBOOT, pkt, a)
            self.ack(counter, op, defs.ACK_STAGE_EXECUTED, defs.ACK_REASON_OK, seq)
            asyncio.create_task(app.reboot(delay, defs.RESET_CAUSE_COMMAND))
            return None
        if op == defs.OP_REPLAY:
            apid, frm, count = struct.unpack_from(defs.ARGS_REPLAY, pkt, a)
            if not 1 <= count <= 4096:
                return False
            return app.link.request_replay(apid, frm, count)
        if op == defs.OP_TC_RESYNC:
            return True  # a resync outside the lost state only consumes its counter
        if op == defs.OP_CLEAR_SAFE:
            app.power.clear_safe()
            app.health.clear_boot_failures()
            app.events.emit(defs.EVENT_SAFE_MODE, defs.SEVERITY_INFO, 0, 0, "safe mode cleared")
            return True
        return False

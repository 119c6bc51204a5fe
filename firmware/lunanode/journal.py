# Store-and-forward journal: every telemetry packet goes here first and leaves only
# when its custody ends: with journal.custody_s > 0 (custody mode) when the ground says it
# committed the packet to the archive (a custody acknowledgement, docs/custody.md), else
# when the broker PUBACKed the MQTT message that carried it.
#
# Layout: data/j/<n> segment files, n increasing, each the raw packets back to back
# (packets are self-delimiting and end in their own CRC: a record needs no extra bytes).
# Appends go to a RAM ring, flushed to the newest segment every packet (flush_ms=0) or
# every flush_ms.  Bounded: at most `segments` files of `segment_bytes`; opening one more
# deletes the oldest, and the packets in it that were never acknowledged are counted in
# `dropped` (exact, persisted).  Acknowledged segments stay until space is needed, so
# REPLAY can re-send them.
#
# Crash safety (kill -9 / reset at any moment): segments are append-only; the boot scan
# checks every record's CRC and a torn tail is cut off by copying the valid prefix to a
# temporary file renamed over the segment.  The acknowledgement (custody) point
# (segment, offset), `dropped` and the last custody counter live in data/jstate written
# with an atomic rename; it lags at most one save period, so a crash re-sends some
# acknowledged packets (the ground de-duplicates on its key) but never skips an
# unacknowledged one.
#
# Custody mode: the acknowledgement point moves only by confirm() (the ground's per-APID
# "committed through sequence count s"): it walks the packets from the point, in journal
# order, while each is covered, and stops at the first one that is not.  Whatever the
# ground has not confirmed custody_s after the last progress is sent again from the
# point (custody_due(), go-back-N; the archive drops the copies), with the wait doubling
# up to 8x while nothing moves.  PUBACKs and UART writes only pace the sender.
#
# data/jseq holds the per-APID next sequence counts when a segment is opened; with the
# newest segment's records they give the counters back after a reset, so sequence counts
# stay contiguous.
import os
import time
from micropython import const
from wire import ccsds
from lunanode import store

_NAPID = const(8)  # APIDs 0..7 tracked for sequence recovery (the dictionary uses 1..7)
_HDR = ccsds.PRIMARY_LEN  # enough to read apid, seq and length
_HALF = const(0x2000)  # half the sequence modulus: "at or before" for custody
_WALK = const(4096)  # packets confirmed per custody message at most (bounds the loop)
# custody state: one preallocated list (one instance attribute: the node's heap is tight)
_MS = const(0)  # custody_s in ms; 0 = custody off (a PUBACK ends custody)
_T = const(1)  # ticks_ms of the last custody progress or re-send
_BACK = const(2)  # re-send wait multiplier (1, 2, 4, 8)
_COUNTER = const(3)  # last custody counter accepted (persisted: replays stay refused)
# 4..6: confirmed packets, go-back re-sends, rejected custody messages (this boot); 7..14: per
# APID 0x8000 | the last count dropped unconfirmed from a full journal (this boot); status
# "custody" = cu[4:]


def _seg_path(n):
    return store.DATA + "/j/" + str(n)


class Journal:
    def __init__(self, ram_bytes, segment_bytes, segments, flush_ms=0, custody_s=0):
        # the RAM ring only exists when flushes are batched (flush_ms > 0); the default
        # write-through mode writes each PacketBuffer straight to the segment
        self.ram = bytearray(ram_bytes if flush_ms else 0)
        self.ram_mv = memoryview(self.ram)
        self.ram_n = 0
        self.ram_pk = 0  # packets in the ring
        self.seg_bytes = segment_bytes
        self.max_segs = segments
        self.flush_ms = flush_ms
        self.segs = []  # segment numbers, oldest first
        self.counts = []  # packets per segment
        self.sizes = []  # bytes per segment
        self.ack_seg = 0  # acknowledged up to (ack_seg, ack_off); ack_idx packets of it
        self.ack_off = 0
        self.ack_idx = 0
        self.send_seg = 0  # next packet to send
        self.send_off = 0
        self.depth = 0  # packets not yet acknowledged (RAM + flash)
        self.dropped = 0  # total, persisted
        self.new_drops = 0  # not yet reported by an event
        self.next_seq = [0] * _NAPID
        self._wf = None  # append handle of the newest segment
        self._rf = None  # read handle
        self._rseg = -1
        self._dirty = False
        self.torn = 0  # bytes cut at boot
        self.hdr = bytearray(_HDR)
        self.cu = [custody_s * 1000, time.ticks_ms(), 1, 0, 0, 0, 0] + [0] * _NAPID

    # -- boot -------------------------------------------------------------------------
    def open(self):
        # the boot scan (jboot.py) is needed once: loaded here and unloaded after, so its
        # code does not stay on the heap (like the config validator, app.load_config)
        import sys
        import lunanode
        from lunanode import jboot

        try:
            jboot.open_journal(self)
        finally:
            del sys.modules["lunanode.jboot"]
            lunanode.__dict__.pop("jboot", None)

    # -- write ------------------------------------------------------------------------
    def append(self, pkt, n):
        # pkt: exactly the n bytes of one packet (a PacketBuffer's memoryview); copied,
        # never kept.  Allocation-free on both paths (tests/firmware: heap_lock).
        self.depth += 1
        apid = ((pkt[0] & 7) << 8) | pkt[1]
        if apid < _NAPID:
            self.next_seq[apid] = ((((pkt[2] & 0x3F) << 8) | pkt[3]) + 1) & ccsds.SEQ_MASK
        if not self.flush_ms:
            # write-through: straight to the newest segment, no copy
            if self.sizes[-1] + n > self.seg_bytes:
                self._rotate()
            f = self._writer()
            f.write(pkt)
            f.flush()
            self.sizes[-1] += n
            self.counts[-1] += 1
            return
        if self.ram_n + n > len(self.ram):
            self.flush()
        a = self.ram_n
        self.ram[a : a + n] = pkt
        self.ram_n = a + n
        self.ram_pk += 1

    def flush(self):
        # RAM ring -> newest segment, opening new segments at record boundaries
        a = 0
        end = self.ram_n
        buf = self.ram
        while a < end:
            room = self.seg_bytes - self.sizes[-1]
            b = a
            k = 0
            while b < end:
                t = (((buf[b + 4] << 8) | buf[b + 5]) + 7)
                if b + t - a > room:
                    break
                b += t
                k += 1
            if b == a:
                if self.sizes[-1] == 0:
                    raise ValueError("packet bigger than a journal segment")
                self._rotate()
                continue
            self._writer().write(self.ram_mv[a:b])
            self.sizes[-1] += b - a
            self.counts[-1] += k
            a = b
        if end:
            self._writer().flush()
        self.ram_n = 0
        self.ram_pk = 0

    def _rotate(self):
        if self._wf:
            self._wf.close()
        n = self.segs[-1] + 1
        while len(self.segs) >= self.max_segs:
            self._drop_oldest()
        store.write_atomic("jseq", " ".join([str(s) for s in self.next_seq]).encode())
        self._wf = open(_seg_path(n), "wb")
        self.segs.append(n)
        self.counts.append(0)
        self.sizes.append(0)

    def _drop_oldest(self):
        n = self.segs[0]
        lost = 0
        if n >= self.ack_seg:
            lost = self.counts[0] - (self.ack_idx if n == self.ack_seg else 0)
            if lost and self.cu[_MS]:
                # custody: per APID the last count dropped unconfirmed (cu[7 + apid]), so
                # the ground stops waiting for what will never come (status "custody")
                h = self.hdr
                f = self._reader(n)
                o = self.ack_off if n == self.ack_seg else 0
                while o + _HDR <= self.sizes[0]:
                    f.seek(o)
                    f.readinto(h)
                    p = ((h[0] & 7) << 8) | h[1]
                    if p < _NAPID:
                        self.cu[7 + p] = 0x8000 | ((h[2] & 0x3F) << 8) | h[3]
                    o += ((h[4] << 8) | h[5]) + 7
            nxt = self.segs[1]
            self.ack_seg = nxt
            self.ack_off = 0
            self.ack_idx = 0
        if self.send_seg <= n:
            self.send_seg = self.segs[1]
            self.send_off = 0
        if self._rseg == n:
            self._close_reader()
        self.segs.pop(0)
        self.counts.pop(0)
        self.sizes.pop(0)
        try:
            os.remove(_seg_path(n))
        except OSError:
            pass
        if lost:
            self.dropped += lost
            self.new_drops += lost
            self.depth -= lost
            self._dirty = True
            self.save()

    # -- read / acknowledge --------------------------------------------------------------
    def _close_reader(self):
        if self._rf:
            self._rf.close()
        self._rf = None
        self._rseg = -1

    def _reader(self, n):
        f = self._rf
        if f is None or self._rseg != n:
            self._close_reader()
            f = open(_seg_path(n), "rb")
            self._rf = f
            self._rseg = n
        return f

    def _writer(self):
        f = self._wf
        if f is None:
            f = self._wf = open(_seg_path(self.segs[-1]), "ab")
        return f

    def pending(self):
        # True when there is something not yet handed to read_batch
        if self.ram_n:
            return True
        i = self.segs.index(self.send_seg) if self.send_seg in self.segs else 0
        return self.send_off < self.sizes[i] or i < len(self.segs) - 1

    def read_batch(self, buf, cap):
        # whole packets from the send cursor into buf[:cap], all from one segment.
        # -> (nbytes, npackets); the caller notes (self.batch_seg, self.batch_off) first
        if self.ram_n:
            self.flush()
        segs = self.segs
        if self.send_seg not in segs:
            self.send_seg = segs[0]
            self.send_off = 0
        i = segs.index(self.send_seg)
        while self.send_off >= self.sizes[i] and i < len(segs) - 1:
            i += 1
            self.send_seg = segs[i]
            self.send_off = 0
        avail = self.sizes[i] - self.send_off
        if avail <= 0:
            return 0, 0
        self.batch_seg = self.send_seg
        self.batch_off = self.send_off
        f = self._reader(self.send_seg)
        f.seek(self.send_off)
        k = f.readinto(memoryview(buf)[: min(cap, avail)])
        o = 0
        npk = 0
        while o + _HDR <= k:
            t = ((buf[o + 4] << 8) | buf[o + 5]) + 7
            if o + t > k:
                break
            o += t
            npk += 1
        self.send_off += o
        return o, npk

    def read_range(self, buf, seg, off, end):
        # re-read bytes [off, end) of segment seg (DUP retransmit); 0 when it was dropped
        if seg not in self.segs:
            return 0
        f = self._reader(seg)
        f.seek(off)
        return f.readinto(memoryview(buf)[: end - off])

    def ack(self, seg, end, npk):
        # the packets [.., end) of segment seg were PUBACKed (called in send order); in
        # custody mode that ends nothing (confirm() does)
        if self.cu[_MS] or seg not in self.segs or seg < self.ack_seg:
            return  # dropped meanwhile (already counted) or stale
        if seg != self.ack_seg:
            self.ack_seg = seg
            self.ack_idx = 0
        self.ack_off = end
        self.ack_idx += npk
        self.depth -= npk
        self._dirty = True

    def rewind(self, seg, off):
        # the send cursor goes back to (seg, off): unacknowledged in-flight data is resent
        if seg in self.segs:
            self.send_seg = seg
            self.send_off = off

    def save(self):
        # persist the acknowledgement point (throttled by the caller)
        if self._dirty:
            self._dirty = False
            store.write_atomic("jstate", ("%d %d %d %d" % (self.ack_seg, self.ack_off, self.dropped,
                                                           self.cu[_COUNTER])).encode())

    # -- custody ----------------------------------------------------------------------------
    def confirm(self, counter, buf, a):
        # an authentic custody acknowledgement with this counter (checked by the caller);
        # buf[a:a+16]: per APID 0..7 a u16, CUSTODY_VALID | s = committed through sequence
        # count s.  Moves the custody point over the covered packets in journal order;
        # -> packets confirmed.  Allocation-free (header read into self.hdr).
        cu = self.cu
        cu[_COUNTER] = counter
        self._dirty = True
        if not cu[_MS]:
            return 0
        if self.ram_n:
            self.flush()
        h = self.hdr
        segs = self.segs
        i = segs.index(self.ack_seg)  # the custody point is always in a kept segment
        moved = 0
        while moved < _WALK:
            if self.ack_off + _HDR > self.sizes[i]:
                if i + 1 >= len(segs):
                    break
                i += 1
                self.ack_seg = segs[i]
                self.ack_off = 0
                self.ack_idx = 0
                continue
            f = self._reader(self.ack_seg)
            f.seek(self.ack_off)
            f.readinto(h)
            p = ((h[0] & 7) << 8) | h[1]
            if p >= _NAPID:
                break
            v = (buf[a + 2 * p] << 8) | buf[a + 2 * p + 1]
            if v < ccsds.CUSTODY_VALID or ((v - (((h[2] & 0x3F) << 8) | h[3])) & ccsds.SEQ_MASK) >= _HALF:
                break
            self.ack_off += ((h[4] << 8) | h[5]) + 7
            self.ack_idx += 1
            moved += 1
        if moved:
            self.depth -= moved
            cu[4] += moved
            cu[_T] = time.ticks_ms()
            cu[_BACK] = 1
            # what is confirmed is not sent again (segment numbers only grow)
            if self.send_seg < self.ack_seg or (self.send_seg == self.ack_seg and self.send_off < self.ack_off):
                self.rewind(self.ack_seg, self.ack_off)
        return moved

    def custody_due(self, now=False):
        # True (and the send cursor back at the custody point) when the ground confirmed
        # nothing for custody_s x the back-off while packets wait for it, or at once with
        # now=True (a new session: the broker may have lost what it acknowledged)
        cu = self.cu
        if not cu[_MS]:
            return False
        t = time.ticks_ms()
        if self.depth <= 0:
            cu[_T] = t
            cu[_BACK] = 1
            return False
        if not now:
            if time.ticks_diff(t, cu[_T]) < cu[_MS] * cu[_BACK]:
                return False
            if cu[_BACK] < 8:
                cu[_BACK] *= 2
            cu[5] += 1
        cu[_T] = t
        self.rewind(self.ack_seg, self.ack_off)
        return True

    def close(self):
        self.flush()
        self.save()
        self._close_reader()
        if self._wf:
            self._wf.close()
            self._wf = None

    # -- replay -------------------------------------------------------------------------
    def find(self, apid, from_seq, count, buf, cap, cur):
        # packets of apid with seq in [from_seq, from_seq+count) (mod 2^14), starting at
        # cursor cur = [segment index, offset] (updated); -> (nbytes, npackets) in buf
        if self.ram_n:
            self.flush()
        o = 0
        npk = 0
        h = self.hdr
        while cur[0] < len(self.segs):
            n = self.segs[cur[0]]
            size = self.sizes[cur[0]]
            f = self._reader(n)
            while cur[1] + _HDR <= size:
                f.seek(cur[1])
                f.readinto(h)
                w0 = (h[0] << 8) | h[1]
                seq = ((h[2] << 8) | h[3]) & ccsds.SEQ_MASK
                t = ((h[4] << 8) | h[5]) + 7
                if (w0 & ccsds.APID_MASK) == apid and ((seq - from_seq) & ccsds.SEQ_MASK) < count:
                    if o + t > cap:
                        return o, npk
                    f.seek(cur[1])
                    f.readinto(memoryview(buf)[o : o + t])
                    o += t
                    npk += 1
                cur[1] += t
            cur[0] += 1
            cur[1] = 0
        return o, npk

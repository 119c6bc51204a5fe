# Store-and-forward journal: every telemetry packet goes here first and leaves only
# after the broker PUBACKed the MQTT message that carried it.
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
# temporary file renamed over the segment.  The acknowledgement point (segment, offset)
# and `dropped` live in data/jstate written with an atomic rename; it lags at most one
# save period, so a crash re-sends some acknowledged packets (the ground de-duplicates
# on apid+seq+time) but never skips an unacknowledged one.  data/jseq holds the per-APID
# next sequence counts when a segment is opened; with the newest segment's records they
# give the counters back after a reset, so sequence counts stay contiguous.
import os
from micropython import const
from wire import ccsds
from lunanode import store

_NAPID = const(8)  # APIDs 0..7 tracked for sequence recovery (the dictionary uses 1..7)
_HDR = ccsds.PRIMARY_LEN  # enough to read apid, seq and length


def _seg_path(n):
    return store.DATA + "/j/" + str(n)


class Journal:
    def __init__(self, ram_bytes, segment_bytes, segments, flush_ms=0):
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

    # -- boot -------------------------------------------------------------------------
    def open(self):
        store.ensure_dir(store.DATA)
        store.ensure_dir(store.DATA + "/j")
        nums = []
        for name in os.listdir(store.DATA + "/j"):
            if name.isdigit():
                nums.append(int(name))
            else:
                os.remove(store.DATA + "/j/" + name)  # a leftover .tmp
        nums.sort()
        st = (store.read("jstate") or b"").split()
        ack_seg = int(st[0]) if len(st) >= 3 else -1
        ack_off = int(st[1]) if len(st) >= 3 else 0
        self.dropped = int(st[2]) if len(st) >= 3 else 0
        sq = (store.read("jseq") or b"").split()
        for i in range(min(len(sq), _NAPID)):
            self.next_seq[i] = int(sq[i])
        buf = bytearray(1100)
        last = nums[-1] if nums else -1
        for n in nums:
            size, count, before = self._scan(n, buf, ack_off if n == ack_seg else -1, n == last)
            self.segs.append(n)
            self.counts.append(count)
            self.sizes.append(size)
            if n == ack_seg:
                self.ack_idx = before
        if not self.segs:
            self.segs.append(0)
            self.counts.append(0)
            self.sizes.append(0)
        if ack_seg not in self.segs:
            # never acked, or its segment is gone: everything present is unacknowledged
            ack_seg = self.segs[0] if ack_seg < self.segs[0] else self.segs[-1]
            ack_off = 0 if ack_seg == self.segs[0] else self.sizes[-1]
            self.ack_idx = 0 if ack_seg == self.segs[0] else self.counts[-1]
        self.ack_seg = ack_seg
        self.ack_off = ack_off
        i = self.segs.index(ack_seg)
        self.depth = sum(self.counts[i:]) - self.ack_idx
        self.send_seg = ack_seg
        self.send_off = ack_off
        self._wf = open(_seg_path(self.segs[-1]), "ab")

    def _scan(self, n, buf, ack_off, is_last):
        # -> (valid bytes, packets, packets before ack_off); cuts a torn tail
        p = _seg_path(n)
        size = os.stat(p)[6]
        off = 0
        count = 0
        before = 0
        mv = memoryview(buf)
        with open(p, "rb") as f:
            while off + ccsds.HEADER_LEN + ccsds.CRC_LEN <= size:
                f.seek(off)
                if f.readinto(mv[:_HDR]) < _HDR:
                    break
                ptype, apid, seq, total, _c, _f = ccsds.peek(buf, 0)
                if total > len(buf) or total < ccsds.OVERHEAD or off + total > size:
                    break
                f.seek(off)
                if f.readinto(mv[:total]) < total or not ccsds.check(buf, 0, total):
                    break
                if is_last and apid < _NAPID:
                    self.next_seq[apid] = (seq + 1) & ccsds.SEQ_MASK
                if off < ack_off:
                    before += 1
                off += total
                count += 1
        if off < size:
            self.torn += size - off
            self._truncate(p, off, buf)
        return off, count, before

    def _truncate(self, p, keep, buf):
        t = p + ".tmp"
        with open(p, "rb") as src, open(t, "wb") as dst:
            left = keep
            mv = memoryview(buf)
            while left:
                k = src.readinto(mv[: min(left, len(buf))])
                if not k:
                    break
                dst.write(mv[:k])
                left -= k
        os.rename(t, p)

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
        # the packets [.., end) of segment seg were PUBACKed (called in send order)
        if seg not in self.segs or seg < self.ack_seg:
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
            store.write_atomic("jstate", ("%d %d %d" % (self.ack_seg, self.ack_off, self.dropped)).encode())

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

# The journal's boot scan (lunanode.journal.Journal.open): segments listed and checked
# record by record (CRC), a torn tail cut, the acknowledgement (custody) point, the drop
# count, the custody counter and the sequence counters read back.  A module of its own
# because it runs once: Journal.open unloads it afterwards, so its code leaves the heap.
import os
from micropython import const
from wire import ccsds
from lunanode import store
from lunanode.journal import _seg_path

_NAPID = const(8)
_HDR = ccsds.PRIMARY_LEN


def open_journal(self):
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
    self.cu[3] = int(st[3]) if len(st) >= 4 else 0
    sq = (store.read("jseq") or b"").split()
    for i in range(min(len(sq), _NAPID)):
        self.next_seq[i] = int(sq[i])
    buf = bytearray(1100)
    last = nums[-1] if nums else -1
    for n in nums:
        size, count, before = _scan(self, n, buf, ack_off if n == ack_seg else -1, n == last)
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
        _truncate(p, off, buf)
    return off, count, before


def _truncate(p, keep, buf):
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

"""The journal's custody cursor on the MicroPython VM (docs/custody.md): packets stay until
the ground's custody acknowledgement covers them (a PUBACK ends nothing), in journal order
across APIDs; confirming allocates nothing; the point, the custody counter and the drop
count survive a restart; unconfirmed data is sent again after custody_s; a full journal
drops the oldest unconfirmed packets and counts them exactly."""

from __future__ import annotations

from firmware_helpers import run_vm

CUSTODY = r"""
import time, micropython
from wire import ccsds, defs
from lunanode import store
from lunanode.journal import Journal
store.ensure_dir(store.DATA)
KEY = bytes(range(32))
j = Journal(1024, 1024, 3, 0, 1)   # custody_s = 1
j.open()
hk = ccsds.PacketBuffer(defs.APID_HK, defs.HK_LEN)
ev = ccsds.PacketBuffer(defs.APID_EVENT, defs.EVENT_LEN)
# HK 0..9, EVENT 0, HK 10..19, EVENT 1, HK 20..24
for i in range(10):
    j.append(hk.finish(100 + i, 0), defs.HK_LEN)
j.append(ev.finish(110, 0), defs.EVENT_LEN)
for i in range(10):
    j.append(hk.finish(111 + i, 0), defs.HK_LEN)
j.append(ev.finish(121, 0), defs.EVENT_LEN)
for i in range(5):
    j.append(hk.finish(122 + i, 0), defs.HK_LEN)
buf = bytearray(1024)
sent = 0
while j.pending():
    n, k = j.read_batch(buf, 1024)
    j.ack(j.batch_seg, j.batch_off + n, k)   # the broker's PUBACK
    sent += k
print("puback", sent, "depth", j.depth)
def args(hk_s, ev_s):
    a = bytearray(16)
    if hk_s is not None:
        v = ccsds.CUSTODY_VALID | hk_s
        a[2 * defs.APID_HK] = v >> 8
        a[2 * defs.APID_HK + 1] = v & 0xFF
    if ev_s is not None:
        v = ccsds.CUSTODY_VALID | ev_s
        a[2 * defs.APID_EVENT] = v >> 8
        a[2 * defs.APID_EVENT + 1] = v & 0xFF
    return a
def msg(counter, hk_s, ev_s, node=b"n01"):
    return ccsds.build_tc(KEY, node, ccsds.CUSTODY_APID, counter, 0, counter, args(hk_s, ev_s))
def deliver(m):
    st, op, counter, a, b, _s = ccsds.open_tc(KEY, b"n01", m, j.cu[3], 0)
    if st != ccsds.TC_OK or b - a != 16:
        return "rejected %d" % st
    return j.confirm(counter, m, a)
# HK through 12 but nothing about EVENT: stops at EVENT 0
print("c1", deliver(msg(1000, 12, None)), j.depth)
# replayed (same counter) and forged (other key) acknowledgements change nothing
print("replay", deliver(msg(1000, 24, 1)), j.depth)
bad = bytearray(msg(1001, 24, 1))
bad[-5] ^= 1  # inside the MAC; the CRC made right again
ccsds.seal(bad, 0, len(bad))
print("forged", deliver(bytes(bad)), j.depth)
print("other node", ccsds.open_tc(KEY, b"n01", msg(1002, 24, 1, b"n02"), j.cu[3], 0)[0])
# EVENT 0 and HK through 12: EVENT 0 + HK 10..12; then stops at HK 13
m = msg(1003, 12, 0)
st, op, counter, a, b, _s = ccsds.open_tc(KEY, b"n01", m, j.cu[3], 0)
w = msg(1, 12, None)
j.confirm(counter - 1, w, a)  # confirms nothing new, but opens the reader (that allocates)
moved = due = None  # globals exist before the heap is locked
j.custody_due()
micropython.heap_lock()
try:
    moved = j.confirm(counter, m, a)
    due = j.custody_due()
finally:
    micropython.heap_unlock()
print("c2", moved, j.depth, "alloc-free")
j.save()
j.close()
j2 = Journal(1024, 1024, 3, 0, 1)
j2.open()
n, k = j2.read_batch(buf, 1024)
print("reopen depth", j2.depth, "counter", j2.cu[3], "first", ccsds.peek(buf, 0)[1:3])
# nothing confirmed for custody_s: due, and the send cursor goes back to the custody point
while j2.pending():
    j2.read_batch(buf, 1024)
time.sleep_ms(1100)
print("due", j2.custody_due(), j2.cu[5], j2.pending())
n, k = j2.read_batch(buf, 1024)
print("resend first", ccsds.peek(buf, 0)[1:3])
# a stale counter is a replay after the restart too
print("stale", ccsds.open_tc(KEY, b"n01", msg(1003, 24, 1), j2.cu[3], 0)[0] == ccsds.TC_REPLAY)
# everything: HK through 24, EVENT through 1
m = msg(1004, 24, 1)
st, op, counter, a, b, _s = ccsds.open_tc(KEY, b"n01", m, j2.cu[3], 0)
print("c3", j2.confirm(counter, m, a), j2.depth, "due", j2.custody_due())
# fill the journal with nothing confirmed: the oldest unconfirmed packets dropped, exactly
for i in range(100):
    j2.append(hk.finish(200 + i, 0), defs.HK_LEN)
print("full", j2.dropped, j2.depth, j2.dropped + j2.depth, j2.cu[7 + defs.APID_HK], j2.cu[7 + defs.APID_EVENT])
"""


def test_journal_custody_cursor(micropython_bin, firmware_image, tmp_path) -> None:
    out = run_vm(micropython_bin, firmware_image, CUSTODY, cwd=tmp_path).splitlines()
    assert out[0] == "puback 27 depth 27", out  # a PUBACK ends nothing in custody mode
    assert out[1] == "c1 10 17", out  # HK 0..9, then EVENT 0 is not covered
    assert out[2] == "replay rejected 2 17", out  # TC_REPLAY
    assert out[3] == "forged rejected 1 17", out  # TC_BAD_MAC
    assert out[4] == "other node 10", out  # TC_WRONG_NODE
    assert out[5] == "c2 4 13 alloc-free", out  # EVENT 0, HK 10..12
    # restart: the custody point, the counter and the next packet to send come back
    assert out[6] == "reopen depth 13 counter 1003 first (1, 13)", out
    assert out[7] == "due True 1 True", out
    assert out[8] == "resend first (1, 13)", out
    assert out[9] == "stale True", out
    assert out[10] == "c3 13 0 due False", out
    # 100 HK of 56 B into 3 segments of 18: what is dropped is counted; nothing else is lost
    dropped, depth, total, hk_mark, ev_mark = (int(x) for x in out[11].split()[1:])
    assert total == 100 and dropped > 0, out
    # what the status tells the ground: HK dropped unconfirmed through count 25 + dropped - 1
    # (HK 0..24 were confirmed, the 100 new ones are 25..124); no EVENT was dropped
    assert hk_mark == 0x8000 | (25 + dropped - 1) and ev_mark == 0, out

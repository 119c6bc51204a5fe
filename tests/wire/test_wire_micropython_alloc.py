"""The encoder allocates nothing per packet on the real MicroPython VM (board-sized heap)."""

from __future__ import annotations

from wire import ccsds
from wire.dictionary import load

D = load()
HK = D.packet("HK")

SCRIPT = """
import gc, struct, micropython
from wire import ccsds, defs, cobs

hk = ccsds.PacketBuffer(defs.APID_HK, defs.HK_LEN)
se = ccsds.PacketBuffer(defs.APID_SEISMIC, defs.SEISMIC_LEN)
frame = bytearray(cobs.max_frame_len(defs.SEISMIC_LEN))
hk_fmt = defs.HK_FMT
s_fmt = defs.SEISMIC_SAMPLE_FMT
s_off = defs.SEISMIC_SAMPLES_OFF

def encode(i):
    # one HK and one SEISMIC packet, values varying with i, as the firmware would
    struct.pack_into(hk_fmt, hk.buf, 12, i, 3, 1, 0, 150000, 12, i & 1023, 0, 2, 1, 4, 0, -20, -5, 0, 2150, 1, 5)
    hk.finish(i, i & 0xFFFF)
    struct.pack_into(">H", se.buf, 12, 1000)
    j = 0
    while j < 100:
        struct.pack_into(s_fmt, se.buf, s_off + 6 * j, j - 50, i & 0x7FFF, -j)
        j += 1
    se.finish(i, 0)
    return cobs.frame_into(se.buf, frame)

def measure(n):
    # inside a function: loop variables are locals, so only the encode path can allocate
    encode(0)  # first call: any lazy setup happens here
    gc.collect()
    before = gc.mem_alloc()
    i = 0
    while i < n:
        encode(i)
        i += 1
    gc.collect()
    after = gc.mem_alloc()
    return before, after

def locked(n):
    # a heap_lock section: any allocation in the encode path raises MemoryError
    micropython.heap_lock()
    try:
        i = 0
        while i < n:
            encode(i)
            i += 1
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok

r = measure(10000)
print("alloc", r[0], r[1])
ok = locked(200)
print("locked", ok, hk.seq, se.seq)
"""


def test_10000_encodes_do_not_grow_the_heap_and_allocate_nothing(run_mpy):
    out = run_mpy(SCRIPT, heapsize="100K").split("\n")
    alloc = next(line for line in out if line.startswith("alloc")).split()
    before, after = int(alloc[1]), int(alloc[2])
    assert after <= before, f"mem_alloc grew from {before} to {after} across 10,000 encodes"
    locked = next(line for line in out if line.startswith("locked")).split()
    assert locked[1] == "True", "the encode path allocated under micropython.heap_lock()"
    # sequence counts advanced once per encode, wrapping at 14 bits
    assert int(locked[2]) == int(locked[3]) == (1 + 10000 + 200) & ccsds.SEQ_MASK


def test_heap_lock_really_catches_an_allocation(run_mpy):
    # the check above could not fail if heap_lock did nothing: prove that it bites
    out = run_mpy(
        "import micropython\nmicropython.heap_lock()\ntry:\n    x = bytearray(10)\n    print('no')\n"
        "except MemoryError:\n    print('caught')\nmicropython.heap_unlock()\n",
        heapsize="100K",
    )
    assert out.strip() == "caught"

"""Unit tests that run on the MicroPython VM itself: exact MQTT bytes, allocation-free
encoding (micropython.heap_lock), the clock across a ticks wrap, the journal's crash
recovery, config errors."""

from __future__ import annotations

import json

from firmware_helpers import run_vm

CODEC = r"""
from lunanode import mqtt
import binascii
def show(name, buf, n):
    print(name, binascii.hexlify(bytes(buf[:n])).decode())
b = bytearray(300)
show("connect", b, mqtt.enc_connect(b, b"n01", 30, False, b"u", b"p", b"w/t", b"bye", 1, True))
show("connect_clean", b, mqtt.enc_connect(b, b"c", 60, True))
show("publish_dup", b, mqtt.enc_publish_head(b, b"a/b", 3, 1, False, True, 0x1234))
show("publish_retain", b, mqtt.enc_publish_head(b, b"a/b", 1000, 1, True, False, 7))
show("publish_qos0", b, mqtt.enc_publish_head(b, b"t", 2, 0))
show("puback", b, mqtt.enc_puback(b, 0x1234))
show("subscribe", b, mqtt.enc_subscribe(b, 1, b"x/cmd", 1))
print("connack", mqtt.dec_connack(b"\x01\x00"), mqtt.dec_connack(b"\x00\x05"))
body = b"\x00\x03a/b\x12\x34xyz"
print("dec_publish", mqtt.dec_publish(0x3B, body, len(body)))
print("len", [binascii.hexlify(bytes(b[:mqtt.put_len(b, 0, n)])).decode() for n in (0, 127, 128, 321, 16383, 16384)])
"""


def test_mqtt_codec_exact_bytes(micropython_bin, firmware_image):
    out = dict(line.split(" ", 1) for line in run_vm(micropython_bin, firmware_image, CODEC).splitlines())
    assert out["connect"] == (
        "101f" "00044d515454" "04" "ec" "001e" "00036e3031" "0003772f74" "0003627965" "000175" "000170"
    )
    assert out["connect_clean"] == "100d00044d5154540402003c000163"  # clean session, no will/user
    assert out["publish_dup"] == "3a0a0003612f621234"  # DUP | QoS 1, rem 10, topic, packet id
    assert out["publish_retain"] == "33ef070003612f620007"  # rem 1007 = 0xef 0x07
    assert out["publish_qos0"] == "3005000174"
    assert out["puback"] == "40021234"
    assert out["subscribe"] == "820a00010005782f636d6401"
    # CONNACK byte 0 bit 0 = session present; byte 1 = return code
    assert out["connack"] == "(1, 0) (0, 5)"
    # flags 0x3B: DUP, QoS 1, retain -> (qos, dup, retain, topic_start, topic_end, pid, payload_start)
    assert out["dec_publish"] == "(1, 1, 1, 2, 5, 4660, 7)"
    assert out["len"] == "['00', '7f', '8001', 'c102', 'ff7f', '808001']"


ALLOC = r"""
import micropython, struct, os
from wire import ccsds, defs
from lunanode import mqtt, store
from lunanode.journal import Journal
from lunanode.clock import Clock
store.ensure_dir(store.DATA)
j = Journal(2048, 8192, 4, 1000)   # flush_ms > 0: the RAM ring takes the packets
j.open()
c = Clock()
c.drift = -12345  # the slew between syncs runs on every stamp: it must not allocate either
hk = ccsds.PacketBuffer(defs.APID_HK, defs.HK_LEN)
seis = ccsds.PacketBuffer(defs.APID_SEISMIC, defs.SEISMIC_LEN)
hdr = bytearray(64)
topic = b"lunabase/s/n01/tm"
def encode():
    struct.pack_into(defs.HK_FMT, hk.buf, 12, 1, 2, 3, 0, 50000, 1, 2, 3, 2, 1, 0, 0, -5, 7, 0, 2500, 1, 4)
    c.stamp()
    j.append(hk.finish(c.coarse, c.fine), defs.HK_LEN)
    for i in range(defs.SEISMIC_SAMPLES):
        struct.pack_into(">hhh", seis.buf, defs.SEISMIC_SAMPLES_OFF + 6 * i, i, -i, 2 * i)
    c.stamp()
    j.append(seis.finish(c.coarse, c.fine), defs.SEISMIC_LEN)
    return mqtt.enc_publish_head(hdr, topic, 1000, 1, False, False, 42)
encode()  # warm up (first calls may intern/allocate)
micropython.heap_lock()
try:
    for _ in range(2):
        encode()
    ok = True
except MemoryError:
    ok = False
micropython.heap_unlock()
print("alloc_free", ok, j.ram_pk)
# write-through journal (flush_ms=0, the default): packets go straight to the file
j.close()
j = Journal(2048, 8192, 4, 0)
j.open()
encode()
micropython.heap_lock()
try:
    for _ in range(2):
        encode()
    ok = True
except MemoryError:
    ok = False
micropython.heap_unlock()
print("alloc_free_write_through", ok, j.depth)
import time
t = time.ticks_us()
for _ in range(50):
    struct.pack_into(defs.HK_FMT, hk.buf, 12, 1, 2, 3, 0, 50000, 1, 2, 3, 2, 1, 0, 0, -5, 7, 0, 2500, 1, 4)
    hk.finish(1, 2)
t1 = time.ticks_us()
for _ in range(20):
    seis.finish(1, 2)
t2 = time.ticks_us()
print("us_hk", time.ticks_diff(t1, t) // 50, "us_seismic", time.ticks_diff(t2, t1) // 20)
"""


def test_packet_encoding_allocates_nothing(micropython_bin, firmware_image, tmp_path):
    out = run_vm(micropython_bin, firmware_image, ALLOC, cwd=tmp_path)
    assert "alloc_free True 6" in out, out
    assert "alloc_free_write_through True 12" in out, out
    print(out)  # per-packet cost on this machine (docs/firmware.md quotes it)


CLOCK = r"""
import time
from lunanode import clock
class T:  # time module with ticks_ms about to wrap (2^30 ms period on the unix port)
    now = (1 << 30) - 1500
    def ticks_ms(self): return self.now
    def ticks_diff(self, a, b): return ((a - b + (1 << 29)) & ((1 << 30) - 1)) - (1 << 29)
    def time(self): return time.time()
    def gmtime(self, t): return time.gmtime(t)
t = T()
clock.time = t
c = clock.Clock(1000)
for _ in range(30):
    t.now = (t.now + 100) & ((1 << 30) - 1)
    c.update()
print("after", c.sec, c.ms, c.up_sec)
off = c.set(2000, 32768)
c.stamp()
print("sync", off, c.coarse, c.fine)
for _ in range(200):
    t.now = (t.now + 100) & ((1 << 30) - 1)
c.update()
off = c.set(c.sec, (c.ms + 2) * 65536 // 1000 + 1)   # 2 ms fast after 20 s: -100 ppm
print("drift", c.drift)
"""


def test_clock_survives_ticks_wrap_and_estimates_drift(micropython_bin, firmware_image, tmp_path):
    out = run_vm(micropython_bin, firmware_image, CLOCK, cwd=tmp_path).split("\n")
    assert out[0] == "after 1003 0 3", out  # 30 x 100 ms across the wrap
    assert out[1] == "sync 997500 2000 32768", out  # +997.5 s correction; time tag now 2000.5 s
    drift = int(out[2].split()[1])
    assert 9000 <= drift <= 11000, out  # 2 ms over 20 s = 100 ppm (x100 in the HK field)


SLEW = r"""
import time
from lunanode import clock
class T:
    now = 0
    def ticks_ms(self): return self.now
    def ticks_diff(self, a, b): return a - b
    def time(self): return 0
    def gmtime(self, t): return time.gmtime(t)
t = T()
clock.time = t
c = clock.Clock(None, False)  # no trusted RTC: the wire epoch
print("boot", c.sec, c.synced)
c.set(1000, 0)
for _ in range(10):          # 100 s of node ticks; the node clock runs 200 ppm slow:
    t.now += 10000           # the ground's time is 100.02 s later
    c.update()
c.set(1100, (20 << 16) // 1000 + 1)
print("drift", c.drift, "offset", c.offset_ms)
for _ in range(10):          # the next 100 s: the slew adds the 20 ms itself
    t.now += 10000
    c.update()
print("slewed", c.sec, c.ms)
t.now += 5
c.update()
print("monotonic", c.sec, c.ms)
c.drift = -32767             # a fast clock: never goes backwards either
for _ in range(100):
    t.now += 1
    c.update()
print("fast", c.sec, c.ms)
"""


def test_clock_slews_by_the_drift_estimate(micropython_bin, firmware_image, tmp_path):
    out = run_vm(micropython_bin, firmware_image, SLEW, cwd=tmp_path).split("\n")
    assert out[0] == "boot 0 False", out
    drift, offset = int(out[1].split()[1]), int(out[1].split()[3])
    assert offset == 20 and drift == 20000, out  # 20 ms over 100 s = 200 ppm (x100)
    assert out[2] == "slewed 1200 40", out  # 1100.020 + 100 s + 200 ppm of slew: the clock keeps up
    assert out[3] == "monotonic 1200 45", out
    sec, ms = map(int, out[4].split()[1:])
    assert (sec, ms) > (1200, 45) and (sec, ms) <= (1200, 145), out  # -327 ppm: slower, not backwards


JOURNAL = r"""
import os
from wire import ccsds, defs
from lunanode import store
from lunanode.journal import Journal
store.ensure_dir(store.DATA)
j = Journal(1024, 1024, 3, 0)
j.open()
pb = ccsds.PacketBuffer(defs.APID_HK, defs.HK_LEN)
for i in range(40):
    j.append(pb.finish(100 + i, 0), defs.HK_LEN)
print("segs", j.segs, "depth", j.depth, "dropped", j.dropped)
buf = bytearray(1024)
n, k = j.read_batch(buf, 1024)
j.ack(j.batch_seg, j.batch_off + n, k)
j.save()
print("acked", k, "depth", j.depth)
j.close()
# a torn write: half a packet at the end of the newest segment
with open(store.DATA + "/j/" + str(j.segs[-1]), "ab") as f:
    f.write(b"\x08\x01\xc0")
j2 = Journal(1024, 1024, 3, 0)
j2.open()
print("reopen", j2.segs, "depth", j2.depth, "dropped", j2.dropped, "torn", j2.torn, "next_hk", j2.next_seq[1])
n, k = j2.read_batch(buf, 1024)
print("first", ccsds.peek(buf, 0)[2], k)
"""


def test_journal_bounded_exact_drops_and_torn_tail(micropython_bin, firmware_image, tmp_path):
    out = run_vm(micropython_bin, firmware_image, JOURNAL, cwd=tmp_path).split("\n")
    # 18 HK packets (56 B) fit a 1024 B segment; 40 packets = 3 segments, 3 kept: none dropped
    assert out[0] == "segs [0, 1, 2] depth 40 dropped 0", out
    assert out[1] == "acked 18 depth 22", out
    # restart: acknowledgement point and sequence counter come back, the torn tail is cut
    assert out[2] == "reopen [0, 1, 2] depth 22 dropped 0 torn 3 next_hk 40", out
    assert out[3] == "first 18 18", out  # sending resumes at the first unacknowledged packet


DROP = r"""
from wire import ccsds, defs
from lunanode import store
from lunanode.journal import Journal
store.ensure_dir(store.DATA)
j = Journal(1024, 1024, 3, 0)
j.open()
pb = ccsds.PacketBuffer(defs.APID_HK, defs.HK_LEN)
for i in range(100):
    j.append(pb.finish(i, 0), defs.HK_LEN)
print(j.dropped, j.depth, j.segs)
"""


def test_journal_full_drops_oldest_and_counts_exactly(micropython_bin, firmware_image, tmp_path):
    out = run_vm(micropython_bin, firmware_image, DROP, cwd=tmp_path).split()
    dropped, depth = int(out[0]), int(out[1])
    assert dropped + depth == 100, out
    assert dropped == 18 * 3, out  # three whole oldest segments of 18 packets went


def test_config_errors_name_the_field(micropython_bin, firmware_image, tmp_path):
    code = r"""
from lunanode import config
cases = [
    {"site": "s", "key": "00" * 16, "broker": {"host": "h"}},
    {"node": "n1", "site": "s", "key": "00" * 16, "broker": {"host": "h", "port": 70000}},
    {"node": "n1", "site": "s", "key": "zz", "broker": {"host": "h"}},
    {"node": "n1", "site": "s", "key": "00" * 16, "broker": {"host": "h"}, "rates": {"hk_msec": 5}},
    {"node": "n1", "site": "s", "key": "00" * 16, "board": "esp32", "broker": {"host": "h"}},
]
for c in cases:
    try:
        config.validate(c)
        print("OK")
    except config.ConfigError as e:
        print(e.field, "|", e)
"""
    out = run_vm(micropython_bin, firmware_image, code).splitlines()
    assert out[0].startswith("node | node: missing"), out
    assert out[1].startswith("broker.port | broker.port: must be in 1..65535"), out
    assert out[2].startswith("key | key: is not hex"), out
    assert out[3].startswith("rates.hk_msec | rates.hk_msec: unknown field"), out
    assert out[4].startswith("wifi.ssid |"), out


def test_bad_config_stops_boot_with_clear_error(micropython_bin, firmware_image, tmp_path):
    import os
    import subprocess

    (tmp_path / "config.json").write_text(json.dumps({"node": "n1", "site": "s", "key": "00" * 16,
                                                      "broker": {"host": "h", "keepalive": "x"}}))
    r = subprocess.run([micropython_bin, "-X", "heapsize=100K", str(firmware_image / "main.py")], cwd=tmp_path,
                       env=dict(os.environ, MICROPYPATH=f".frozen:{firmware_image}/lib"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert "CONFIG_ERROR broker.keepalive: must be an integer" in r.stdout, r.stdout
    assert "broker.keepalive" in (tmp_path / "data" / "config_error").read_text()


def test_config_example_is_valid(micropython_bin, firmware_image, tmp_path):
    from lunabase import ROOT

    cfg = json.loads((ROOT / "firmware" / "config.example.json").read_text())
    cfg["key"] = "ab" * 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = run_vm(micropython_bin, firmware_image,
                 "from lunanode import config\nc = config.load()\nprint(c['board'], c['broker']['keepalive'], len(c['key']))",
                 cwd=tmp_path)
    assert out.split() == ["esp32", "30", "32"], out


SEISMIC_LATE = r"""
from lunanode.board import sim
class T:
    now = 0
    def ticks_ms(self): return self.now
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
t = T()
sim.time = t
for bus in (None, {"host": "127.0.0.1", "port": 9}):  # per-sample synthesis; the noise block
    cfg = {"node": "x"}
    if bus:
        cfg["sim"] = bus
    b = sim.Board(cfg)
    buf = bytearray(14 + 600)
    got = n = 0
    for i in range(40):
        t.now += 300  # the scheduler's 250 ms between polls, each poll 50 ms late
        k = b.seismic(buf, 14 + 6 * n, 100 - n, 100)
        got += k
        n += k
        if n >= 100:
            n = 0
    waiting = b._seis_frac // 1000
    t.now += 5000  # a 5 s stall: the buffer keeps one batch, the older samples are lost
    stall = b.seismic(buf, 14, 100, 100)
    print(got, waiting, stall, b._seis_frac // 1000)
"""


def test_sim_seismometer_keeps_samples_past_a_batch_when_polls_are_late(micropython_bin, firmware_image, tmp_path):
    # 40 polls 300 ms apart at 100 Hz: 1,200 samples due.  Every one is delivered or still
    # buffered (at most one poll's worth); the old sim board dropped the samples due past
    # each batch boundary (1,000 delivered: the SEISMIC rate fell with the polls' lateness)
    for line in run_vm(micropython_bin, firmware_image, SEISMIC_LATE, cwd=tmp_path, heap="128K").splitlines():
        got, waiting, stall, left = map(int, line.split())
        assert got + waiting == 1200 and waiting <= 30, line
        assert stall == 100 and left == 0, line

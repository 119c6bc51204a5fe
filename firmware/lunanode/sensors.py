# Telemetry packets of the sensors: one preallocated PacketBuffer per APID and
# preallocated lists of raw field values.  Each emit_*() reads the board, packs the
# payload with struct.pack_into at offset 12, time-tags, seals (CRC) and appends to the
# journal; in steady state none of this allocates (tests/firmware: heap_lock).
import struct
from wire import ccsds, defs

_P = ccsds.HEADER_LEN  # payload offset


class Sensors:
    def __init__(self, app):
        self.app = app
        self.board = app.board
        self.clock = app.clock
        self.journal = app.journal
        self.hk = ccsds.PacketBuffer(defs.APID_HK, defs.HK_LEN)
        self.pw = ccsds.PacketBuffer(defs.APID_POWER, defs.POWER_LEN)
        self.th = ccsds.PacketBuffer(defs.APID_THERMAL, defs.THERMAL_LEN)
        self.rad = ccsds.PacketBuffer(defs.APID_RADIATION, defs.RADIATION_LEN)
        self.seis = ccsds.PacketBuffer(defs.APID_SEISMIC, defs.SEISMIC_LEN)
        self.pbs = (self.hk, self.pw, self.th, self.rad, self.seis)
        self.pw_raw = [0] * 8
        self.th_raw = [0] * 6
        self.rad_raw = [0, 0]
        self.rad_total = 0  # 0.1 uGy
        self.rad_acc = 0  # remainder, 0.01 uGy/h * ms
        self.rad_ms = 0
        self.seis_n = 0  # samples in the batch being filled
        self.seis_sec = 0  # time of its first sample
        self.seis_ms = 0
        self.fault = [False] * 6  # by SENSOR_*: a SENSOR_FAULT event was sent
        self.soc = -1.0  # last battery SOC reading, % (-1 unknown)

    def restore_seq(self, next_seq):
        # continue the per-APID sequence counts found in the journal after a reset
        for pb in self.pbs:
            pb.seq = next_seq[pb.apid]
        self.app.events.pb.seq = next_seq[defs.APID_EVENT]
        self.app.tc.pb.seq = next_seq[defs.APID_ACK]

    def _send(self, pb):
        c = self.clock
        c.stamp()
        self.journal.append(pb.finish(c.coarse, c.fine), pb.total_len)

    def _check(self, sensor, ok, name):
        if ok != self.fault[sensor]:
            return
        self.fault[sensor] = not ok
        self.app.events.emit(
            defs.EVENT_SENSOR_FAULT,
            defs.SEVERITY_WARNING if not ok else defs.SEVERITY_INFO,
            sensor,
            0 if not ok else 1,
            name + (" dead" if not ok else " ok"),
        )

    def emit_hk(self):
        a = self.app
        h = a.health
        j = self.journal
        c = self.clock
        c.update()
        nc = a.link.next_contact
        until = nc - c.sec if nc > c.sec else 0
        struct.pack_into(
            defs.HK_FMT,
            self.hk.buf,
            _P,
            c.up_sec,
            h.boots & 0xFFFF,
            h.reset_cause,
            a.power.mode,
            h.free_heap,
            min(h.lag_max, 65535),
            min(j.depth, 65535),
            j.dropped,
            a.link.state,
            a.link.reconnects & 0xFFFF,
            a.tc.accepted & 0xFFFF,
            a.tc.rejected & 0xFFFF,
            c.offset_ms,
            c.drift,
            until,
            self.board.cpu_temp(),
            min(a.sched.hk_period() // 1000, 65535),
            (defs.HK_FLAG_SAFE if a.power.mode == defs.MODE_SAFE else 0) | (defs.HK_FLAG_WDT_ARMED if self.board.wdt_armed else 0) | (defs.HK_FLAG_SYNCED if c.synced else 0),
        )
        h.lag_max = 0
        self._send(self.hk)

    def emit_power(self):
        r = self.pw_raw
        ok = self.board.power(r)
        self._check(defs.SENSOR_POWER, ok, "power")
        if ok:
            self.soc = r[4] / 100
        struct.pack_into(defs.POWER_FMT, self.pw.buf, _P, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
        self._send(self.pw)

    def emit_thermal(self):
        r = self.th_raw
        ok = self.board.thermal(r)
        self._check(defs.SENSOR_THERMAL, ok, "thermal")
        struct.pack_into(defs.THERMAL_FMT, self.th.buf, _P, r[0], r[1], r[2], r[3], r[4], r[5], 0)
        self._send(self.th)

    def emit_radiation(self, interval_ms):
        r = self.rad_raw
        ok = self.board.radiation(r)
        self._check(defs.SENSOR_RADIATION, ok, "radiation")
        # dose: rate (0.01 uGy/h) * ms -> 0.1 uGy units is / 36,000,000 (integer, remainder kept)
        acc = self.rad_acc + r[0] * interval_ms
        d = acc // 36000000
        self.rad_acc = acc - d * 36000000
        self.rad_total += d
        struct.pack_into(
            defs.RADIATION_FMT, self.rad.buf, _P, r[0], r[1] if ok else 0, min(interval_ms, 65535), self.rad_total, 0
        )
        self._send(self.rad)

    def poll_seismic(self, rate):
        # pull samples due from the board into the SEISMIC packet; send at 100
        n0 = self.seis_n
        k = self.board.seismic(
            self.seis.buf, defs.SEISMIC_SAMPLES_OFF + 6 * n0, defs.SEISMIC_SAMPLES - n0, rate
        )
        if not k:
            return
        c = self.clock
        if n0 == 0:
            # first sample of the batch: now minus the samples that were already waiting
            c.update()
            back = (k - 1) * 1000 // rate
            s = c.sec
            ms = c.ms - back
            while ms < 0:
                ms += 1000
                s -= 1
            self.seis_sec = s
            self.seis_ms = ms
        self.seis_n = n0 + k
        if self.seis_n >= defs.SEISMIC_SAMPLES:
            struct.pack_into(defs.SEISMIC_FMT, self.seis.buf, _P, rate)
            c.stamp_at(self.seis_sec, self.seis_ms)
            self.journal.append(self.seis.finish(c.coarse, c.fine), defs.SEISMIC_LEN)
            self.seis_n = 0

# The `sim` board: sensors come from the simulator's sensor bus (docs/sim-protocol.md:
# TCP, JSON lines) when config has "sim": {"host", "port"}; otherwise a quiet synthetic
# environment is generated here, so the firmware runs anywhere (HIL virtual board).
# Runs on the MicroPython unix port: no network/machine.WDT; reset() exits the process
# with code 75 so the simulator / virtual board starts it again.
import asyncio
import math
import random
import struct
import sys
import time

from micropython import const

from lunanode import store
from wire import defs

EXIT_RESET = const(75)  # "restart me": sys.exit code of a commanded reset
# samples the synthesised seismometer buffers between polls: one SEISMIC batch (the
# ADXL345 of the hw board holds 32; seismic_poll_ms says how often each is drained)
_SEIS_FIFO = const(100)
_NZ_START = const(256)  # random starts in the quiet-ground noise block (rb(8))

_MODES = ("DAY", "NIGHT", "EMERGENCY", "SAFE")
_POWER = ("solar_voltage", "solar_current", "battery_voltage", "battery_current", "battery_soc", "battery_temp")
_THERMAL = ("surface_temp", "electronics_temp", "radiator_temp", "sensor_head_temp", "enclosure_temp")
_QUIET = {
    "solar_voltage": 5.0,
    "solar_current": 0.4,
    "battery_voltage": 3.95,
    "battery_current": 0.1,
    "battery_soc": 80.0,
    "battery_temp": 20.0,
    "surface_temp": 60.0,
    "electronics_temp": 22.0,
    "radiator_temp": 35.0,
    "sensor_head_temp": 40.0,
    "enclosure_temp": 21.0,
    "cpu_temp": 30.0,
    "dose_rate": 57.0,
    "count_rate": 3.0,
}


class Board:
    name = "sim"
    wdt_armed = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.node = cfg["node"]
        self.bus = cfg.get("sim")
        self.v = dict(_QUIET) if self.bus else _QUIET  # only the bus changes values
        self.faults = {}
        self.noise = 0.05  # um/s2
        self.quakes = []
        self.mode = defs.MODE_DAY
        self.load_mw = 500
        self.heater = 0
        self.connected = False
        self.sim_time = 0.0
        self._bus = None
        self._rad_frac = 0.0
        self._rad_t = time.ticks_ms()
        self._seis_t = time.ticks_ms()
        self._seis_frac = 0
        # quiet-ground noise block (_fill_noise) for noise level _nz_raw: simulated nodes
        # only (sensor bus, 128 KB heap), allocated here before the heap fragments; nodes
        # without the bus (100 KB heap) synthesise every sample
        self._nz = bytearray(6 * (_NZ_START + defs.SEISMIC_SAMPLES)) if self.bus else None
        self._nzmv = memoryview(self._nz) if self._nz is not None else None
        self._nz_raw = -1
        self.app = None
        self.sensors_on = True

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, app):
        self.app = app
        if self.bus:
            from lunanode.board.simbus import Bus  # only nodes of a simulation load it

            self._bus = Bus(self)
            asyncio.create_task(self._bus.run())

    async def net_up(self):
        return True

    def reset_cause(self):
        # no hardware register on the unix port: a leftover "run" marker means the last
        # run ended without a clean exit (killed / power cut)
        return defs.RESET_CAUSE_HARD if store.exists("run") else defs.RESET_CAUSE_POWER_ON

    def reset(self):
        sys.exit(EXIT_RESET)

    def wdt_start(self, ms):
        pass  # the simulator watches the process instead

    def wdt_feed(self):
        pass

    # -- sensors --------------------------------------------------------------------------
    def _get(self, k, scale):
        v = self.v.get(k, 0.0)
        f = self.faults.get(k)
        if f == "noisy":
            v = v * (0.9 + 0.2 * random.random())
        return int(v * scale)

    def _ok(self, names):
        for k in names:
            if self.faults.get(k) == "dead":
                return False
        return True

    def power(self, raw):
        ok = self._ok(_POWER)
        if ok:
            raw[0] = self._get("solar_voltage", 1000)
            raw[1] = self._get("solar_current", 1000)
            raw[2] = self._get("battery_voltage", 1000)
            raw[3] = self._get("battery_current", 1000)
            raw[4] = self._get("battery_soc", 100)
            raw[5] = self._get("battery_temp", 100)
        raw[6] = self.load_mw
        raw[7] = 1000 if self.heater else 0
        return ok

    def thermal(self, raw):
        ok = self._ok(_THERMAL)
        if ok:
            for i in range(5):
                raw[i] = self._get(_THERMAL[i], 100)
        raw[5] = self.heater
        return ok

    def radiation(self, raw):
        # raw[0] dose rate (0.01 uGy/h), raw[1] counts since the last call
        now = time.ticks_ms()
        dt = time.ticks_diff(now, self._rad_t) / 1000
        self._rad_t = now
        ok = self._ok(("dose_rate", "count_rate"))
        if ok:
            raw[0] = self._get("dose_rate", 100)
            c = self.v.get("count_rate", 0.0) * dt + self._rad_frac
            raw[1] = int(c)
            self._rad_frac = c - raw[1]
        return ok

    def cpu_temp(self):
        return self._get("cpu_temp", 100)

    def seismic_rate(self, rate):
        return rate  # synthesised: any rate

    def seismic_poll_ms(self, rate):
        # the synthesised sensor buffers one batch (_SEIS_FIFO): drain it every 50 samples
        # (2x per batch, a poll can be up to half a batch late without a loss); 4 polls a
        # second were 40 % of a simulated node's wake-ups
        return max(5, min(500, 50000 // rate))

    def seismic(self, buf, off, n, rate):
        # samples due since the last call, synthesised on the time grid: at most n now, the
        # rest stay buffered for the next call like in a sensor's FIFO (up to _SEIS_FIFO;
        # older ones are lost, as in stream mode).  Dropping the rest instead lost the
        # samples due past every batch boundary: a poll 13 ms late on average cut the
        # SEISMIC rate to 95 %.
        now = time.ticks_ms()
        due = time.ticks_diff(now, self._seis_t) * rate + self._seis_frac
        self._seis_t = now
        if due > _SEIS_FIFO * 1000:
            due = _SEIS_FIFO * 1000
        k = due // 1000
        if k > n:
            k = n
        self._seis_frac = due - k * 1000
        if not self.sensors_on or self.faults.get("seismic") == "dead":
            return 0
        nraw = int(self.noise * 100) if self.noise < 300 else 30000
        rb = random.getrandbits
        quakes = self.quakes
        nz = self._nz
        nzmv = self._nzmv
        if nz is not None and nzmv is not None and not quakes and k:
            # quiet ground: k consecutive samples of a noise block (refilled in place when the
            # noise level changes) from a random start, one slice copy: synthesising 100
            # samples a second one by one was an eighth of a simulated node's CPU
            if self._nz_raw != nraw:
                self._fill_noise(nz, nraw)
                self._nz_raw = nraw
            o = 6 * rb(8)
            buf[off : off + 6 * k] = nzmv[o : o + 6 * k]
            return k
        t0 = 0.0
        if quakes and self.app:
            c = self.app.clock
            c.update()
            t0 = c.sec + c.ms / 1000 - (k + self._seis_frac // 1000) / rate  # the oldest sample due
        pk = struct.pack_into
        for i in range(k):
            # ~gaussian noise from four uniform bytes (sd 148), one getrandbits call for all four
            r = rb(32)
            g = (r & 255) + ((r >> 8) & 255) + ((r >> 16) & 255) + (r >> 24) - 510
            x = nraw * g // 148
            if quakes:
                t = t0 + i / rate
                for q in quakes:
                    dt = t - q[0]
                    if dt >= 0:
                        x += int(100 * q[1] * math.exp(-dt / q[3]) * math.sin(2 * math.pi * q[2] * dt))
            if x > 32767:
                x = 32767
            elif x < -32768:
                x = -32768
            pk(">hhh", buf, off + 6 * i, x, x * 4 // 5, x * 3 // 5)
        return k

    @staticmethod
    def _fill_noise(nz, nraw):
        # the noise below, len(nz) // 6 samples (every start in [0, _NZ_START) has a whole
        # batch after it)
        rb = random.getrandbits
        for i in range(len(nz) // 6):
            r = rb(32)
            x = nraw * ((r & 255) + ((r >> 8) & 255) + ((r >> 16) & 255) + (r >> 24) - 510) // 148
            if x > 32767:
                x = 32767
            elif x < -32768:
                x = -32768
            struct.pack_into(">hhh", nz, 6 * i, x, x * 4 // 5, x * 3 // 5)

    def set_mode(self, mode, load_mw, heater):
        self.mode = mode
        self.load_mw = load_mw
        self.heater = heater
        self.sensors_on = mode in (defs.MODE_DAY, defs.MODE_SAFE)
        if self._bus:
            self._bus.mode_changed()

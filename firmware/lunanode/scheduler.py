# Periodic work on asyncio: one task per sensor with its own period (config "rates",
# changed by SET_RATE), the seismometer polled often and batched 100 samples per packet,
# (how late the loop wakes up, HK loop_lag, is measured by the health task's 1 s tick:
# a separate probe 4x a second was a third of an idle node's wake-ups).  Deadlines
# advance by the period (no drift); after a stall they skip forward instead of bursting.
import asyncio
import time
from wire import defs


class Scheduler:
    def __init__(self, app):
        self.app = app
        r = app.cfg["rates"]
        # periods in ms by SENSOR_* (index 0 unused); SEISMIC: sample period in us
        self.period = [0, r["hk_ms"], r["power_ms"], r["thermal_ms"], r["radiation_ms"], 0]
        self.seis_rate = r["seismic_hz"]
        self.beat = time.ticks_ms()  # last time every periodic task was seen alive

    def set_rate(self, sensor, period_ms):
        # SET_RATE; -> False when the value is not acceptable
        if sensor == defs.SENSOR_SEISMIC:
            if not 1 <= period_ms <= 1000:
                return False
            self.seis_rate = 1000 // period_ms  # period 1 ms = 1 kHz
            return True
        if not 1 <= sensor <= 4 or period_ms < 10:
            return False
        self.period[sensor] = period_ms
        return True

    def hk_period(self):
        p = self.app.power
        if p.mode in (defs.MODE_NIGHT, defs.MODE_EMERGENCY):
            return p.night_hk_ms()
        return self.period[defs.SENSOR_HK]

    def start(self):
        c = asyncio.create_task
        c(self._every(defs.SENSOR_HK))
        c(self._every(defs.SENSOR_POWER))
        c(self._every(defs.SENSOR_THERMAL))
        c(self._every(defs.SENSOR_RADIATION))
        c(self._seismic())

    def _period(self, sensor):
        if sensor == defs.SENSOR_HK:
            return self.hk_period()
        m = self.app.power.mode
        if m in (defs.MODE_NIGHT, defs.MODE_EMERGENCY):
            # hibernating: sensors off; POWER rides along with the heartbeat (SOC watch)
            return self.hk_period() if sensor == defs.SENSOR_POWER else 0
        return self.period[sensor]

    async def _every(self, sensor):
        s = self.app.sensors
        nxt = time.ticks_ms()
        last = nxt
        while True:
            p = self._period(sensor)
            if not p:
                await asyncio.sleep_ms(500)  # off in this mode; look again soon
                nxt = time.ticks_ms()
                continue
            nxt = time.ticks_add(nxt, p)
            now = time.ticks_ms()
            d = time.ticks_diff(nxt, now)
            if d < -p:
                nxt = now  # stalled for more than a period: skip, don't burst
                d = 0
            # sleep in slices so a shorter period from SET_RATE / a mode change applies soon
            while d > 0:
                await asyncio.sleep_ms(min(d, 1000))
                if self._period(sensor) != p:
                    nxt = time.ticks_ms()
                    break
                d = time.ticks_diff(nxt, time.ticks_ms())
            now = time.ticks_ms()
            try:
                if sensor == defs.SENSOR_HK:
                    self.app.health.tick()
                    s.emit_hk()
                    self.beat = now
                elif sensor == defs.SENSOR_POWER:
                    s.emit_power()
                    self.app.power.evaluate()
                elif sensor == defs.SENSOR_THERMAL:
                    s.emit_thermal()
                else:
                    s.emit_radiation(time.ticks_diff(now, last))
            except MemoryError:
                self.app.health.oom += 1
            last = now

    async def _seismic(self):
        s = self.app.sensors
        while True:
            rate = self.app.board.seismic_rate(self.seis_rate)  # what the sensor can do
            m = self.app.power.mode
            if not rate or m != defs.MODE_DAY:
                s.seis_n = 0
                await asyncio.sleep_ms(500)
                continue
            # poll often enough for the sensor's buffer: the board says how often (the hw
            # board's 32-deep FIFO: 4x per 100-sample batch, <= 25 ms at 1 kHz); few wakeups
            # matter when a thousand simulated nodes share 2 cores
            await asyncio.sleep_ms(self.app.board.seismic_poll_ms(rate))
            s.poll_seismic(rate)

# Drivers for the real boards (esp32, rp2), shared: the documented dev-board sensor set.
#
#   BME280     I2C 0x76   enclosure temperature (integer compensation, datasheet 4.2.3)
#   ADXL345    I2C 0x53   3-axis accelerometer as seismometer, FIFO in stream mode,
#                         100/200/400/800/1600 Hz; counts, full resolution (3.9 mg/LSB)
#   DS18B20 x3 1-Wire     surface, radiator, sensor-head temperatures (bus order by ROM)
#   ADC        dividers   battery and solar voltage; shunt amplifiers (INA181A2, 10 mOhm,
#                         mid-rail reference) for battery and solar current
#   counter    pin IRQ    radiation detector pulses (rising edges), dose = cps * factor
# Wiring table and calibration: docs/firmware.md.  A sensor that does not answer is
# reported as a fault (SENSOR_FAULT event); the packet goes out with its last values.
import struct
import time
import machine
import onewire
import ds18x20
from micropython import const
from wire import defs

_BME = const(0x76)
_ADXL = const(0x53)
_ADXL_RATES = ((100, 0x0A), (200, 0x0B), (400, 0x0C), (800, 0x0D), (1600, 0x0E))
_UGYH_PER_CPS = const(1900)  # 0.01 uGy/h per count/s: calibration of the dev detector


class Bme280:
    def __init__(self, i2c):
        self.i2c = i2c
        c = i2c.readfrom_mem(_BME, 0x88, 6)
        self.t1, self.t2, self.t3 = struct.unpack("<Hhh", c)
        i2c.writeto_mem(_BME, 0xF4, b"\x27")  # temp x1, pressure x1, normal mode
        self.buf = bytearray(3)

    def temp(self):
        # 0.01 degC
        self.i2c.readfrom_mem_into(_BME, 0xFA, self.buf)
        b = self.buf
        adc = (b[0] << 12) | (b[1] << 4) | (b[2] >> 4)
        v1 = (((adc >> 3) - (self.t1 << 1)) * self.t2) >> 11
        v2 = (((((adc >> 4) - self.t1) * ((adc >> 4) - self.t1)) >> 12) * self.t3) >> 14
        return ((v1 + v2) * 5 + 128) >> 8


class Adxl345:
    def __init__(self, i2c, rate):
        self.i2c = i2c
        self.rate = 0
        self.buf = bytearray(6)
        self.one = bytearray(1)
        i2c.writeto_mem(_ADXL, 0x31, b"\x0b")  # DATA_FORMAT: full resolution, +-16 g
        i2c.writeto_mem(_ADXL, 0x38, b"\x9f")  # FIFO_CTL: stream mode, 31 samples
        i2c.writeto_mem(_ADXL, 0x2D, b"\x08")  # POWER_CTL: measure
        self.set_rate(rate)

    @staticmethod
    def supported(rate):
        # the highest output data rate <= rate (at least 100 Hz)
        best = _ADXL_RATES[0][0]
        for r, _c in _ADXL_RATES:
            if r <= rate:
                best = r
        return best

    def set_rate(self, rate):
        code = _ADXL_RATES[0][1]
        for r, c in _ADXL_RATES:
            if r == rate:
                code = c
        self.i2c.writeto_mem(_ADXL, 0x2C, bytes((code,)))
        self.rate = rate

    def read(self, out, off, n):
        # drain up to n samples from the FIFO into out[off:] as big-endian i16 triples
        self.i2c.readfrom_mem_into(_ADXL, 0x39, self.one)  # FIFO_STATUS: entries
        k = min(self.one[0] & 0x3F, n)
        b = self.buf
        for i in range(k):
            self.i2c.readfrom_mem_into(_ADXL, 0x32, b)
            x, y, z = struct.unpack("<hhh", b)
            struct.pack_into(">hhh", out, off + 6 * i, x, y, z)
        return k

    def power(self, on):
        self.i2c.writeto_mem(_ADXL, 0x2D, b"\x08" if on else b"\x00")


class Counter:
    # radiation pulses on a pin interrupt; the handler only increments an int
    def __init__(self, pin):
        self.n = 0
        self.pin = machine.Pin(pin, machine.Pin.IN)
        self.pin.irq(self._irq, machine.Pin.IRQ_RISING)
        self.t = time.ticks_ms()

    def _irq(self, _pin):
        self.n += 1

    def take(self):
        # -> (counts since the last call, elapsed ms)
        irq = machine.disable_irq()
        n = self.n
        self.n = 0
        machine.enable_irq(irq)
        now = time.ticks_ms()
        dt = time.ticks_diff(now, self.t)
        self.t = now
        return n, dt


class HwBoard:
    # subclasses set: PINS (dict), adc(pin) -> object with read_u16(), ADC_VREF_MV,
    # cpu_temp(), and may override reset_cause().
    PINS = {}
    ADC_VREF_MV = 3300
    name = "hw"

    def __init__(self, cfg):
        self.cfg = cfg
        self.faults = {}
        self.wdt = None
        self.wdt_armed = False
        self.wlan = None
        self.uart = None
        p = self.PINS
        self.i2c = machine.I2C(p["i2c_id"], scl=machine.Pin(p["scl"]), sda=machine.Pin(p["sda"]), freq=400000)
        self.bme = self._try(lambda: Bme280(self.i2c))
        self.acc = self._try(lambda: Adxl345(self.i2c, Adxl345.supported(cfg["rates"]["seismic_hz"] or 100)))
        self.ow = None
        self.roms = []
        try:
            ow = ds18x20.DS18X20(onewire.OneWire(machine.Pin(p["onewire"])))
            self.roms = ow.scan()
            self.ow = ow
        except OSError:
            pass
        self.ds_t = 0
        self.counter = Counter(p["rad"])
        self.a_bat = self.adc(p["bat_v"])
        self.a_sol = self.adc(p["sol_v"])
        self.a_ibat = self.adc(p["bat_i"])
        self.a_isol = self.adc(p["sol_i"]) if p.get("sol_i") is not None else None
        self.sensors_on = True

    def _try(self, f):
        try:
            return f()
        except OSError:
            return None

    def adc(self, pin):
        return machine.ADC(machine.Pin(pin))

    async def start(self, app):
        self.app = app

    async def net_up(self):
        import asyncio
        import network

        w = self.wlan
        if w is None:
            w = self.wlan = network.WLAN(network.STA_IF)
            w.active(True)
        if w.isconnected():
            return True
        wc = self.cfg["wifi"]
        w.connect(wc["ssid"], wc["password"])
        t = time.ticks_ms()
        while not w.isconnected():
            if time.ticks_diff(time.ticks_ms(), t) > wc["timeout_ms"]:
                w.disconnect()
                return False
            await asyncio.sleep_ms(200)
        return True

    def reset_cause(self):
        rc = machine.reset_cause()
        if rc == machine.PWRON_RESET:
            return defs.RESET_CAUSE_POWER_ON
        if rc == machine.HARD_RESET:
            return defs.RESET_CAUSE_HARD
        if rc == machine.WDT_RESET:
            return defs.RESET_CAUSE_WATCHDOG
        if rc == machine.DEEPSLEEP_RESET:
            return defs.RESET_CAUSE_DEEPSLEEP
        if rc == machine.SOFT_RESET:
            return defs.RESET_CAUSE_SOFT
        return defs.RESET_CAUSE_BROWNOUT

    def reset(self):
        machine.reset()

    def open_uart(self, u):
        # the UART link's port (config "link": "uart"); -1 = the board's default id/pins
        if self.uart is None:
            p = self.PINS
            i = u["id"] if u["id"] >= 0 else p["uart_id"]
            tx = u["tx"] if u["tx"] >= 0 else p["uart_tx"]
            rx = u["rx"] if u["rx"] >= 0 else p["uart_rx"]
            self.uart = machine.UART(i, baudrate=u["baud"], tx=machine.Pin(tx), rx=machine.Pin(rx),
                                     rxbuf=max(256, u["rx_max"] * 2), timeout=0)
        return self.uart

    def wdt_start(self, ms):
        self.wdt = machine.WDT(timeout=min(ms, self.PINS.get("wdt_max_ms", ms)))
        self.wdt_armed = True

    def wdt_feed(self):
        if self.wdt:
            self.wdt.feed()

    def _mv(self, a, divider_x100):
        # ADC millivolts at the battery/panel: raw u16 * vref * divider
        return a.read_u16() * self.ADC_VREF_MV * divider_x100 // (65535 * 100)

    def _ma(self, a):
        # INA181A2 (gain 50) over 10 mOhm, output around vref/2: 1 mV out = 2 mA
        if a is None:
            return 0
        mv = a.read_u16() * self.ADC_VREF_MV // 65535 - self.ADC_VREF_MV // 2
        return mv * 2

    def power(self, raw):
        try:
            raw[0] = self._mv(self.a_sol, 300)  # 2:1 + 1:1 -> x3 divider
            raw[1] = max(0, self._ma(self.a_isol))
            raw[2] = self._mv(self.a_bat, 200)  # x2 divider
            raw[3] = self._ma(self.a_ibat)
            # Li-ion SOC from open-circuit voltage, linear 3.30 V..4.15 V (0.01 %)
            raw[4] = max(0, min(10000, (raw[2] - 3300) * 10000 // 850))
            raw[5] = self.bme.temp() if self.bme else 0
            raw[6] = 0
            raw[7] = 0
            return True
        except OSError:
            return False

    def thermal(self, raw):
        ok = True
        if self.ow and self.roms and self.sensors_on:
            try:
                # conversion started by the previous call (750 ms ago at least): read, restart
                for i in range(min(3, len(self.roms))):
                    t = self.ow.read_temp(self.roms[i])
                    raw[(0, 2, 3)[i]] = int(t * 100)
                self.ow.convert_temp()
            except OSError:
                ok = False
        else:
            ok = False
        raw[1] = self.cpu_temp()
        try:
            raw[4] = self.bme.temp() if self.bme else raw[4]
        except OSError:
            ok = False
        raw[5] = 0
        return ok

    def radiation(self, raw):
        n, dt = self.counter.take()
        raw[1] = n
        raw[0] = n * _UGYH_PER_CPS * 1000 // dt if dt > 0 else 0
        return True

    def cpu_temp(self):
        return 0

    def seismic_rate(self, rate):
        return Adxl345.supported(rate) if rate else 0

    def seismic_poll_ms(self, rate):
        # the ADXL345 FIFO holds 32 samples: drain it every 25 (4x per 100-sample batch)
        return max(5, min(250, 25000 // rate))

    def seismic(self, buf, off, n, rate):
        if not self.acc or not self.sensors_on:
            return 0
        try:
            if rate != self.acc.rate:
                self.acc.set_rate(rate)
            return self.acc.read(buf, off, n)
        except OSError:
            return 0

    def set_mode(self, mode, load_mw, heater):
        on = mode in (defs.MODE_DAY, defs.MODE_SAFE)
        if on != self.sensors_on and self.acc:
            try:
                self.acc.power(on and mode == defs.MODE_DAY)
            except OSError:
                pass
        self.sensors_on = on

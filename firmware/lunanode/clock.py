# The node clock: seconds since 2000-01-01 (the wire epoch) plus milliseconds, advanced
# from time.ticks_ms() so it never goes backwards on its own.  ticks_ms() wraps (2^30 ms
# on most ports): update() uses ticks_diff and runs at least every few seconds from the
# scheduler, far below half the wrap period.  Seconds and milliseconds are kept apart so
# the numbers stay small ints (no heap).
#
# Time model (docs/firmware.md "Clock"): TIME_SYNC steps the clock (set()); the size of
# each correction over the time since the previous sync estimates the drift (HK
# clock_drift, ppm x 100), and update() slews by that estimate between syncs, so the
# next correction only measures what the estimate missed.  Until the first sync of a
# boot the clock is "unsynced" (HK flags without defs.HK_FLAG_SYNCED, status "synced": false): the ground
# syncs it and corrects the time tags stamped before.  (Keeping the clock monotonic
# across resets through a saved second was tried: its ~100 bytes of heap were more than
# the 100 KB node's margin allows; see docs/firmware.md "Clock".)
import time
from micropython import const

_SLEW_UNIT = const(100000000)  # drift is ppm x 100: d ms drift by d * drift / 1e8 ms
_SLEW_MAX = const(20000)  # ms: 20000 * 32767 + 1e8 < 2^30
_slew = 0  # drift not yet applied, in ms / 1e8: a module global, not an attribute (a 12th
# attribute grows the instance's map from 11 to 17 slots: 96 bytes on the 64-bit port)


class Clock:
    def __init__(self, sec=None, rtc=True):
        # rtc false: start at the wire epoch, as a board without a backed-up RTC does after
        # a power cycle
        if sec is None and rtc:
            # the board RTC / host clock in wire-epoch seconds (the unix port counts from 1970)
            sec = int(time.time())
            if time.gmtime(0)[0] == 1970:
                # imported here, once per boot: a local, not a slot in this module's globals
                from wire.ccsds import EPOCH_UNIX

                sec -= EPOCH_UNIX
        self.sec = sec if sec and sec > 0 else 0  # wire-epoch seconds
        self.ms = 0  # 0..999
        self.up_sec = 0  # uptime
        self.up_ms = 0
        self._last = time.ticks_ms()
        self.coarse = 0  # last stamp() result
        self.fine = 0
        self.offset_ms = 0  # last TIME_SYNC correction (i32)
        self.drift = 0  # ppm * 100 (i16), estimated from syncs and slewed by update()
        self.synced = False
        self._sync_up = 0  # uptime (s) at the last sync

    def update(self):
        now = time.ticks_ms()
        d = time.ticks_diff(now, self._last)
        self._last = now
        if d <= 0:
            return
        u = self.up_ms + d
        if u >= 1000:
            self.up_sec += u // 1000
            u %= 1000
        self.up_ms = u
        if self.drift:
            # slew: a clock estimated slow by drift ppm x 100 runs d * drift / 1e8 ms faster
            # (of at most 20 s since the last update: the health task runs it every second;
            # the product stays a small int on 32-bit ports)
            global _slew
            acc = _slew + min(d, _SLEW_MAX) * self.drift
            k = acc // _SLEW_UNIT
            _slew = acc - k * _SLEW_UNIT
            d += k
            if d < 0:
                return  # never backwards
        ms = self.ms + d
        if ms >= 1000:
            self.sec += ms // 1000
            ms %= 1000
        self.ms = ms

    def stamp(self):
        # node time now -> self.coarse, self.fine (allocation-free)
        self.update()
        self.coarse = self.sec
        self.fine = (self.ms << 16) // 1000

    def stamp_at(self, sec, ms):
        # an arbitrary (sec, ms) time -> self.coarse, self.fine
        if ms >= 1000:
            sec += ms // 1000
            ms %= 1000
        self.coarse = sec
        self.fine = (ms << 16) // 1000

    def uptime(self):
        self.update()
        return self.up_sec

    def set(self, coarse, fine):
        # TIME_SYNC: step to (coarse, fine); returns the correction in ms.  The correction
        # since the previous sync is what the slewed drift estimate missed: the estimate
        # moves by it (rare: may allocate)
        self.update()
        ms = (fine * 1000) >> 16
        off = (coarse - self.sec) * 1000 + (ms - self.ms)
        elapsed = self.up_sec - self._sync_up
        if self.synced and elapsed >= 10 and -10000 < off < 10000:
            ppm100 = self.drift + off * 100000000 // (elapsed * 1000)
            self.drift = max(-32767, min(32767, ppm100))
        self.sec = coarse
        self.ms = ms
        self.offset_ms = max(-0x80000000, min(0x7FFFFFFF, off))
        self.synced = True
        self._sync_up = self.up_sec
        global _slew
        _slew = 0
        return self.offset_ms

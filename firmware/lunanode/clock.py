# The node clock: seconds since 2000-01-01 (the wire epoch) plus milliseconds, advanced
# from time.ticks_ms() so it never goes backwards on its own.  ticks_ms() wraps (2^30 ms
# on most ports): update() uses ticks_diff and runs at least every few seconds from the
# scheduler, far below half the wrap period.  TIME_SYNC steps it (set()); the size of each
# correction over the time since the previous one estimates the drift (HK clock_drift).
# Seconds and milliseconds are kept apart so the numbers stay small ints (no heap).
import time
from micropython import const

_EPOCH_1970 = const(946684800)  # 1970-01-01 -> 2000-01-01


def host_epoch_seconds():
    # the board RTC / host clock in wire-epoch seconds (unix port counts from 1970)
    t = int(time.time())
    if time.gmtime(0)[0] == 1970:
        t -= _EPOCH_1970
    return t if t > 0 else 0


class Clock:
    def __init__(self, sec=None):
        self.sec = host_epoch_seconds() if sec is None else sec  # wire-epoch seconds
        self.ms = 0  # 0..999
        self.up_sec = 0  # uptime
        self.up_ms = 0
        self._last = time.ticks_ms()
        self.coarse = 0  # last stamp() result
        self.fine = 0
        self.offset_ms = 0  # last TIME_SYNC correction (i32)
        self.drift = 0  # ppm * 100 (i16)
        self.synced = False
        self._sync_up = 0  # uptime (s) at the last sync

    def update(self):
        now = time.ticks_ms()
        d = time.ticks_diff(now, self._last)
        self._last = now
        if d <= 0:
            return
        ms = self.ms + d
        if ms >= 1000:
            self.sec += ms // 1000
            ms %= 1000
        self.ms = ms
        u = self.up_ms + d
        if u >= 1000:
            self.up_sec += u // 1000
            u %= 1000
        self.up_ms = u

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
        # TIME_SYNC: step to (coarse, fine); returns the correction in ms
        self.update()
        ms = (fine * 1000) >> 16
        off = (coarse - self.sec) * 1000 + (ms - self.ms)
        elapsed = self.up_sec - self._sync_up
        if self.synced and elapsed >= 10 and -10000 < off < 10000:
            ppm100 = off * 100000000 // (elapsed * 1000)
            self.drift = max(-32768, min(32767, ppm100))
        self.sec = coarse
        self.ms = ms
        self.offset_ms = max(-0x80000000, min(0x7FFFFFFF, off))
        self.synced = True
        self._sync_up = self.up_sec
        return self.offset_ms

    def jump(self, seconds):
        # fault injection (simulator): step without counting it as a sync
        self.update()
        self.sec += int(seconds)

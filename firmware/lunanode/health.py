# Health and safety: boot count and consecutive failed boots (persisted), reset cause,
# free heap, loop lag (how late this task's 1 s tick wakes up), and the watchdog.  A
# boot is "failed" until it has run healthy_s seconds; safe_after failed boots in a row
# put the node in SAFE mode (boot-loop guard, like ESPHome/Tasmota).  The hardware
# watchdog is fed only while the loop is healthy: lag below max_lag_ms and the HK task
# seen within 3 periods (+ 5 s).
import asyncio
import gc
import time
from wire import defs
from lunanode import store


class Health:
    def __init__(self, app):
        self.app = app
        self.cfg = app.cfg["health"]
        self.boots = 0
        self.failed_boots = 0
        self.reset_cause = defs.RESET_CAUSE_POWER_ON
        self.free_heap = 0
        self.lag_max = 0
        self.oom = 0
        self.healthy = False

    def boot(self, board):
        # called once, first thing after the config: -> True when SAFE mode is due
        store.ensure_dir(store.DATA)
        self.boots = store.read_int("boots") + 1
        store.write_int("boots", self.boots)
        self.failed_boots = store.read_int("bootfail")
        store.write_int("bootfail", self.failed_boots + 1)
        rc = store.read_int("rcause", -1)
        if rc >= 0:
            self.reset_cause = rc  # a commanded reset said why before going down
            store.remove("rcause")
        else:
            self.reset_cause = board.reset_cause()
        store.write_int("run", 1)  # removed on a clean exit (sim board: detects kills)
        return self.failed_boots >= self.cfg["safe_after"]

    def tick(self):
        # before every HK: collect garbage so free_heap is comparable between packets
        gc.collect()
        self.free_heap = gc.mem_free()

    async def run(self):
        app = self.app
        b = app.board
        wdt = self.cfg["wdt_ms"]
        if wdt:
            b.wdt_start(wdt)
        t0 = time.ticks_ms()
        saves = 0
        while True:
            t = time.ticks_ms()
            await asyncio.sleep_ms(1000)
            # loop lag (HK loop_lag): how late this tick woke up, the largest since the last HK
            late = time.ticks_diff(time.ticks_ms(), t) - 1000
            if late > self.lag_max:
                self.lag_max = late
            app.clock.update()
            try:
                saves = self._check(saves, t0)
            except MemoryError:
                self.oom += 1  # the next second tries again; the watchdog decides

    def _check(self, saves, t0):
        app = self.app
        b = app.board
        now = time.ticks_ms()
        hk = app.sched.hk_period()
        alive = time.ticks_diff(now, app.sched.beat) < 3 * hk + 5000
        if alive and self.lag_max < self.cfg["max_lag_ms"]:
            b.wdt_feed()
        if not self.healthy and time.ticks_diff(now, t0) >= self.cfg["healthy_s"] * 1000:
            self.healthy = True
            if not app.power.safe:
                store.write_int("bootfail", 0)
                self.failed_boots = 0
        saves += 1
        app.journal.save()  # acknowledgement point, at most once a second
        if app.cfg["journal"]["flush_ms"] and saves * 1000 >= app.cfg["journal"]["flush_ms"]:
            saves = 0
            app.journal.flush()
        if app.journal.new_drops:
            n = app.journal.new_drops
            app.journal.new_drops = 0
            app.events.emit(defs.EVENT_JOURNAL_DROPPED, defs.SEVERITY_WARNING, n, app.journal.dropped, "journal full")
        return saves

    def clear_boot_failures(self):
        store.write_int("bootfail", 0)
        self.failed_boots = 0

# Power modes.  DAY: everything on.  NIGHT (hibernate): sensors off, heartbeat HK+POWER
# every night_hk_s, the link sleeps sleep_s between short contacts (awake_s), announcing
# "asleep" + next_contact before each clean DISCONNECT.  EMERGENCY (battery critical):
# like NIGHT with emergency_sleep_s.  SAFE: after repeated failed boots or by command;
# sensors except HK/POWER off, link up for commands.
# Automatic: battery SOC below emergency_soc -> EMERGENCY, below night_soc -> NIGHT,
# back to DAY above night_soc + hysteresis.  SET_MODE forces a mode (for duration_s, 0 =
# until changed); a critical battery still wins.
from wire import defs

NAMES = ("DAY", "NIGHT", "EMERGENCY", "SAFE")
_LOAD_MW = (900, 60, 30, 400)  # nominal load per mode, reported to the simulator


class Power:
    def __init__(self, app):
        self.app = app
        self.cfg = app.cfg["power"]
        self.mode = defs.MODE_DAY
        self.forced = -1  # mode forced by SET_MODE (-1: automatic)
        self.forced_until = 0  # uptime s (0: no end)
        self.safe = False

    def night_hk_ms(self):
        return self.cfg["night_hk_s"] * 1000

    def sleep_s(self):
        return self.cfg["emergency_sleep_s"] if self.mode == defs.MODE_EMERGENCY else self.cfg["sleep_s"]

    def low_battery(self):
        return self.mode in (defs.MODE_NIGHT, defs.MODE_EMERGENCY)

    def force(self, mode, duration_s):
        if not 0 <= mode <= 3:
            return False
        if mode == defs.MODE_SAFE:
            self.safe = True
        elif self.safe:
            self.safe = False
        self.forced = mode
        self.forced_until = self.app.clock.uptime() + duration_s if duration_s else 0
        self.evaluate()
        return True

    def clear_safe(self):
        self.safe = False
        if self.forced == defs.MODE_SAFE:
            self.forced = -1
        self.evaluate()

    def evaluate(self):
        c = self.cfg
        soc = self.app.sensors.soc
        m = self.mode
        if self.forced >= 0 and self.forced_until and self.app.clock.uptime() >= self.forced_until:
            self.forced = -1
        if soc >= 0 and soc < c["emergency_soc"]:
            want = defs.MODE_EMERGENCY
        elif self.safe:
            want = defs.MODE_SAFE
        elif self.forced >= 0:
            want = self.forced
        elif soc < 0:
            want = m if m != defs.MODE_EMERGENCY else defs.MODE_NIGHT
        elif soc < c["night_soc"]:
            want = defs.MODE_NIGHT
        elif m in (defs.MODE_NIGHT, defs.MODE_EMERGENCY) and soc < c["night_soc"] + c["hysteresis"]:
            want = defs.MODE_NIGHT
        else:
            want = defs.MODE_DAY
        if want != m:
            self.set(want)

    def set(self, mode):
        old = self.mode
        self.mode = mode
        self.app.board.set_mode(mode, _LOAD_MW[mode], 0)
        sev = defs.SEVERITY_WARNING if mode in (defs.MODE_EMERGENCY, defs.MODE_SAFE) else defs.SEVERITY_INFO
        self.app.events.emit(defs.EVENT_MODE_CHANGE, sev, old, mode, NAMES[old] + ">" + NAMES[mode])
        if mode == defs.MODE_EMERGENCY:
            self.app.events.emit(defs.EVENT_LOW_BATTERY, defs.SEVERITY_CRITICAL, int(self.app.sensors.soc * 100), 0)
        self.app.link.kick.set()

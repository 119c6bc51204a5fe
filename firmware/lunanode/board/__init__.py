# Board layer (HAL).  Each board module has a Board class with the same surface:
#   start(app)            coroutine: background work (sensor bus, IRQs); returns at once
#   net_up()              coroutine -> True when the network (WiFi) is usable
#   reset_cause()         -> wire.defs RESET_CAUSE_*
#   reset()               never returns
#   wdt_start(ms), wdt_feed(), wdt_armed
#   power(raw) / thermal(raw) / radiation(raw) -> True if fresh (False: sensor fault);
#       raw lists of the packet's integer fields (see sensors.py)
#   cpu_temp() -> 0.01 degC
#   seismic_rate(rate) -> the sample rate the sensor will really use for a requested one
#   seismic(buf, off, n, rate) -> samples written (3 x i16 big-endian each, at buf[off])
#   set_mode(mode, load_mw, heater): sensors on/off for a power mode
#   faults: sensor name -> fault, read by the scheduler to report SENSOR_FAULT


def load(name, cfg):
    if name == "sim":
        from lunanode.board.sim import Board
    elif name == "esp32":
        from lunanode.board.esp32 import Board
    elif name == "rp2":
        from lunanode.board.rp2 import Board
    else:
        raise ValueError("board: unknown board %r" % (name,))
    return Board(cfg)

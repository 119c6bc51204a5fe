# Wiring: config -> board -> clock, journal, events, sensors, telecommands, power,
# link, scheduler, health; then every task on one asyncio loop.
import asyncio
import gc
import sys
from wire import defs
from lunanode import VERSION, store
from lunanode.board import load as load_board
from lunanode.clock import Clock
from lunanode.journal import Journal
from lunanode.events import Events
from lunanode.sensors import Sensors
from lunanode.telecommand import Telecommands
from lunanode.power import Power
from lunanode.scheduler import Scheduler
from lunanode.health import Health


def log(msg):
    print("[lunanode]", msg)


class App:
    def __init__(self, cfg):
        self.cfg = cfg
        self.version = VERSION
        self.board = load_board(cfg["board"], cfg)
        self.health = Health(self)
        safe = self.health.boot(self.board)
        self.clock = Clock(None, cfg["rtc"])
        j = cfg["journal"]
        self.journal = Journal(j["ram_bytes"], j["segment_bytes"], j["segments"], j["flush_ms"], j["custody_s"])
        self.journal.open()
        self.events = Events(self.clock, self.journal)
        self.tc = Telecommands(self)
        self.power = Power(self)
        self.sensors = Sensors(self)
        self.sensors.restore_seq(self.journal.next_seq)
        if "uart" in cfg:
            from lunanode.uartlink import UartLink  # loaded by preload: only UART nodes have it

            self.link = UartLink(self)
        else:
            from lunanode.link import Link

            self.link = Link(self)
        self.sched = Scheduler(self)
        self.events.emit(defs.EVENT_BOOT, defs.SEVERITY_INFO, self.health.boots, self.health.reset_cause, "fw " + VERSION)
        if self.journal.torn:
            self.events.emit(defs.EVENT_JOURNAL_DROPPED, defs.SEVERITY_WARNING, 0, self.journal.torn, "torn tail cut (bytes)")
        if safe:
            self.power.safe = True
            self.power.set(defs.MODE_SAFE)
            self.events.emit(defs.EVENT_SAFE_MODE, defs.SEVERITY_CRITICAL, self.health.failed_boots, 0, "boot loop")
        self.board.set_mode(self.power.mode, 900, 0)

    def board_log(self, msg):
        log(msg)

    async def reboot(self, delay_s, cause):
        await asyncio.sleep_ms(delay_s * 1000)
        # give the link up to 5 s to deliver the acknowledgements
        for _ in range(50):
            if self.journal.depth == 0:
                break
            await asyncio.sleep_ms(100)
        self.shutdown()
        store.write_int("rcause", cause)
        self.board.reset()

    def shutdown(self):
        self.journal.close()
        store.remove("run")

    async def main(self):
        log("node %s/%s board %s boot %d" % (self.cfg["site"], self.cfg["node"], self.cfg["board"], self.health.boots))
        await self.board.start(self)
        self.sched.start()
        asyncio.create_task(self.link.run())
        await self.health.run()


def load_config(path):
    # validate, then unload the validator: it is needed once and costs ~9 KB of heap
    from lunanode import config as config_mod

    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        err = e
    finally:
        del sys.modules["lunanode.config"]
        sys.modules.pop("lunanode.uartcfg", None)  # the uart section's names (UART nodes)
        import lunanode

        lunanode.__dict__.pop("config", None)  # the package keeps its submodules too
        lunanode.__dict__.pop("uartcfg", None)
        gc.collect()
    from lunanode.cfgerror import report_config_error  # loaded only when needed: heap

    report_config_error(err, path)
    sys.exit(78)  # EX_CONFIG


def preload(path):
    # import every module before the config is parsed: code loaded into an unfragmented
    # heap leaves the largest free blocks for buffers (matters at a 100 KB heap)
    import json

    board = "sim"
    sim = False
    link = "mqtt"
    try:
        with open(path) as f:
            raw = json.loads(f.read())
        board = raw.get("board", "sim")
        sim = "sim" in raw
        link = raw.get("link", "mqtt")
    except (OSError, ValueError, AttributeError):
        pass  # load_config reports it properly
    raw = None
    gc.collect()
    if link == "uart":
        import lunanode.uartlink  # never loaded by an MQTT node (and mqtt.py never by a UART node)
    else:
        import lunanode.link
    try:
        if board == "sim":
            import lunanode.board.sim
            if sim:
                import lunanode.board.simbus
        elif board == "esp32":
            import lunanode.board.esp32
        elif board == "rp2":
            import lunanode.board.rp2
    except ImportError:
        pass  # load_board says which
    asyncio.Lock  # the asyncio package loads these on first use
    asyncio.Event
    gc.collect()


def main(path="config.json"):
    preload(path)
    cfg = load_config(path)
    store.remove("config_error")
    app = App(cfg)
    try:
        asyncio.run(app.main())
    except KeyboardInterrupt:
        app.shutdown()

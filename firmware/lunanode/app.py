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
        self.journal = Journal(j["ram_bytes"], j["segment_bytes"], j["segments"], j["flush_ms"])
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


def report_config_error(e, path):
    # the config is unusable: say so on the console, keep a marker for the flasher and,
    # when the broker part is usable (sim board: no WiFi needed), tell the ground too
    log("CONFIG_ERROR " + str(e))
    try:
        store.ensure_dir(store.DATA)
        store.write_atomic("config_error", str(e).encode())
    except OSError:
        pass
    try:
        import json

        with open(path) as f:
            raw = json.loads(f.read())
        if raw.get("board", "sim") == "sim" and raw.get("link", "mqtt") == "mqtt" and raw["broker"]["host"]:
            asyncio.run(asyncio.wait_for_ms(_tell_ground(raw, e), 15000))
    except Exception as x:  # best effort: the console line above is the report
        log("could not report the config error to the broker: %r" % (x,))


async def _tell_ground(raw, e):
    # EVENT CONFIG_ERROR (text = the field) on tm + retained status with the error, then a
    # clean DISCONNECT; nothing is journaled (the journal's config is not trusted)
    import json
    import struct
    from wire import ccsds, topics
    from lunanode.mqtt import Client

    site = raw["site"]
    node = raw["node"]
    b = raw["broker"]
    c = Client(node, 60, b.get("user", ""), b.get("password", ""), "", "", 256, None, None)
    await c.connect(b["host"], b.get("port", 1883), None, 10000, True)
    pb = ccsds.PacketBuffer(defs.APID_EVENT, defs.EVENT_LEN)
    struct.pack_into(defs.EVENT_FMT, pb.buf, ccsds.HEADER_LEN, defs.EVENT_CONFIG_ERROR, defs.SEVERITY_ERROR, 0, 0, 0,
                     getattr(e, "field", "config").encode()[:24])
    clk = Clock()
    clk.stamp()
    mv = pb.finish(clk.coarse, clk.fine)
    await c.publish(topics.topic(site, node, topics.TM).encode(), mv, defs.EVENT_LEN, 1, False, False, 1)
    st = json.dumps({"state": "offline", "mode": "SAFE", "boot": store.read_int("boots"), "next_contact": 0,
                     "hk_period": 0, "dict_crc": defs.DICT_CRC, "fw": VERSION, "error": str(e)}).encode()
    await c.publish(topics.topic(site, node, topics.STATUS).encode(), st, len(st), 1, True, False, 2)
    await asyncio.sleep_ms(500)  # let the PUBACKs come back before the DISCONNECT
    await c.disconnect()


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

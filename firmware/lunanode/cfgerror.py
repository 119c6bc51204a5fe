# A config that cannot be used: say so on the console, keep a marker for the flasher and,
# when the broker part is usable, tell the ground.  Its own module, loaded only then
# (app.load_config): the code does not sit on every healthy node's heap.
import asyncio
from wire import defs
from lunanode import VERSION, store
from lunanode.app import log
from lunanode.clock import Clock


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

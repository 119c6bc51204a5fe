# Node configuration: config.json at the filesystem root, validated once at boot.
# Every problem raises ConfigError naming the field (e.g. "broker.port: must be an int
# in 1..65535, got 'x'").  Reference with every field: docs/firmware.md.
import json

BOARDS = ("esp32", "rp2", "sim")
LINKS = ("mqtt", "uart")


class ConfigError(ValueError):
    def __init__(self, field, msg):
        super().__init__(field + ": " + msg)
        self.field = field


# section -> {key: default}; a default of None means required
_DEFAULTS = {
    "broker": {
        "host": "",  # required with link "mqtt"
        "port": 1883,
        "user": "",
        "password": "",
        "tls": False,  # mqtts: the broker's certificate is verified against "ca"
        "ca": "ca.der",  # the CA certificate (DER) on the node's filesystem (lunabase flash --ca)
        "tls_host": "",  # name the broker's certificate must carry ("": host)
        "keepalive": 30,  # s
        "window": 4,  # QoS 1 messages in flight
        "max_msg": 1024,  # bytes of packets per MQTT message (container)
        "rx_max": 512,  # largest incoming MQTT packet accepted (bigger: discarded)
        "backoff_min_ms": 500,
        "backoff_max_ms": 60000,
        "connect_timeout_ms": 10000,
    },
    "wifi": {"ssid": "", "password": "", "timeout_ms": 20000},
    "rates": {
        "hk_ms": 1000,
        "power_ms": 5000,
        "thermal_ms": 10000,
        "radiation_ms": 10000,
        "seismic_hz": 100,  # accelerometer sample rate, 100 samples per SEISMIC packet
    },
    "journal": {
        "ram_bytes": 2048,  # RAM ring in front of the flash journal
        "flush_ms": 0,  # RAM -> flash at least this often (0: every packet)
        "segment_bytes": 16384,  # one journal file
        "segments": 8,  # journal files kept (bound = segments * segment_bytes)
        "custody_s": 0,  # >0: keep packets until the ground's custody ack; re-send after this long
    },
    "power": {
        "night_soc": 30.0,  # % below which the node hibernates
        "emergency_soc": 10.0,  # % below which the node is in EMERGENCY
        "hysteresis": 5.0,  # % above a threshold before leaving a low mode
        "night_hk_s": 600,  # HK period while hibernating
        "night_keepalive": 1200,  # s, MQTT keepalive at night
        "sleep_s": 3600,  # offline time between night contacts
        "awake_s": 20,  # online time per night contact
        "emergency_sleep_s": 14400,
        "low_backoff_factor": 4,  # reconnect backoff multiplier when the battery is low
    },
    "health": {
        "wdt_ms": 30000,  # 0: no hardware watchdog
        "healthy_s": 60,  # a boot counts as good after this long
        "safe_after": 3,  # consecutive failed boots before SAFE mode
        "max_lag_ms": 5000,  # loop lag above which the watchdog is starved
    },
}

_LIMITS = {
    "broker.port": (1, 65535),
    "broker.keepalive": (0, 65535),
    "broker.window": (1, 32),
    "broker.max_msg": (64, 16384),
    "broker.rx_max": (128, 16384),
    "broker.backoff_min_ms": (10, 3600000),
    "broker.backoff_max_ms": (10, 86400000),
    "broker.connect_timeout_ms": (100, 600000),
    "rates.hk_ms": (10, 86400000),
    "rates.power_ms": (10, 86400000),
    "rates.thermal_ms": (10, 86400000),
    "rates.radiation_ms": (10, 86400000),
    "rates.seismic_hz": (0, 1000),
    "journal.ram_bytes": (700, 65536),
    "journal.flush_ms": (0, 600000),
    "journal.segment_bytes": (1024, 1048576),
    "journal.segments": (2, 1000),
    "journal.custody_s": (0, 86400),
    "power.night_hk_s": (1, 86400),
    "power.night_keepalive": (0, 65535),
    "power.sleep_s": (1, 2592000),
    "power.awake_s": (1, 86400),
    "power.emergency_sleep_s": (1, 2592000),
    "health.wdt_ms": (0, 600000),
    "health.safe_after": (1, 100),
}


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_id(field, v):
    if not isinstance(v, str) or not 1 <= len(v) <= 32:
        raise ConfigError(field, "must be a string of 1-32 characters, got %r" % (v,))
    for ch in v:
        if not (ch.isalpha() and ch.lower() == ch or ch.isdigit() or ch in "_-"):
            raise ConfigError(field, "use only a-z 0-9 _ -, got %r" % (v,))


def _section(sect, defaults, given, limits):
    # one config section: defaults filled in, types and limits checked
    if not isinstance(given, dict):
        raise ConfigError(sect, "must be an object")
    out = {}
    for k, d in defaults.items():
        f = sect + "." + k
        v = given.get(k, d)
        if v is None:
            raise ConfigError(f, "missing (required)")
        if isinstance(d, bool):
            if not isinstance(v, bool):
                raise ConfigError(f, "must be true or false, got %r" % (v,))
        elif isinstance(d, int):
            if not _num(v) or int(v) != v:
                raise ConfigError(f, "must be an integer, got %r" % (v,))
            v = int(v)
        elif isinstance(d, float):
            if not _num(v):
                raise ConfigError(f, "must be a number, got %r" % (v,))
            v = float(v)
        elif d is None or isinstance(d, str):
            if not isinstance(v, str):
                raise ConfigError(f, "must be a string, got %r" % (v,))
        lim = limits.get(f)
        if lim and isinstance(v, (int, float)) and not lim[0] <= v <= lim[1]:
            raise ConfigError(f, "must be in %d..%d, got %r" % (lim[0], lim[1], v))
        out[k] = v
    for k in given:
        if k not in defaults:
            raise ConfigError(sect + "." + k, "unknown field (typo?)")
    return out


def validate(raw):
    # -> a plain dict with every default filled in; raises ConfigError
    if not isinstance(raw, dict):
        raise ConfigError("config", "must be a JSON object")
    cfg = {}
    for k in ("node", "site"):
        if k not in raw:
            raise ConfigError(k, "missing (required)")
        _check_id(k, raw[k])
        cfg[k] = raw[k]
    board = raw.get("board", "sim")
    if board not in BOARDS:
        raise ConfigError("board", "must be one of esp32, rp2, sim, got %r" % (board,))
    cfg["board"] = board
    # false: ignore the board's RTC and start the clock at the wire epoch (what a board
    # without a backed-up RTC does after a power cycle); the ground syncs it
    rtc = raw.get("rtc", True)
    if not isinstance(rtc, bool):
        raise ConfigError("rtc", "must be true or false, got %r" % (rtc,))
    cfg["rtc"] = rtc
    link = raw.get("link", "mqtt")
    if link not in LINKS:
        raise ConfigError("link", "must be mqtt or uart, got %r" % (link,))
    # the link is told by cfg["uart"]: present only on a UART node (no extra entry for MQTT)
    key = raw.get("key")
    if not isinstance(key, str):
        raise ConfigError("key", "missing: the node's telecommand key as hex (at least 32 hex digits)")
    try:
        kb = bytes.fromhex(key)
    except ValueError:
        raise ConfigError("key", "is not hex")
    if len(kb) < 16:
        raise ConfigError("key", "must be at least 16 bytes (32 hex digits), got %d" % len(kb))
    cfg["key"] = kb
    for sect, defaults in _DEFAULTS.items():
        cfg[sect] = _section(sect, defaults, raw.get(sect, {}), _LIMITS)
    if link == "uart":
        # the uart section's names live in their own module: only a UART node interns them
        # (loaded qstrs stay in RAM for good; MQTT nodes on a 100 KB heap keep that margin)
        from lunanode import uartcfg

        cfg["uart"] = _section("uart", uartcfg.DEFAULTS, raw.get("uart", {}), uartcfg.LIMITS)
    p = cfg["power"]
    if p["emergency_soc"] >= p["night_soc"]:
        raise ConfigError("power.emergency_soc", "must be below power.night_soc")
    b = cfg["broker"]
    if b["backoff_max_ms"] < b["backoff_min_ms"]:
        raise ConfigError("broker.backoff_max_ms", "must be >= broker.backoff_min_ms")
    j = cfg["journal"]
    if j["segment_bytes"] < b["max_msg"]:
        raise ConfigError("journal.segment_bytes", "must be >= broker.max_msg")
    if link == "mqtt":
        if not b["host"]:
            raise ConfigError("broker.host", "missing (required)")
        if b["tls"]:
            try:
                with open(b["ca"], "rb") as f:
                    f.read(1)
            except OSError:
                # never fall back to an unverified connection
                raise ConfigError("broker.ca", "tls needs the broker's CA certificate (DER) at %s: lunabase flash --ca" % b["ca"])
        if board != "sim" and not cfg["wifi"]["ssid"]:
            raise ConfigError("wifi.ssid", "missing: board %s needs WiFi" % board)
    else:
        u = cfg["uart"]
        if board == "sim" and not u["path"] and u["fd"] < 0:
            raise ConfigError("uart.path", "missing: the sim board needs uart.path or uart.fd")
        if j["segment_bytes"] < u["max_frame"]:
            raise ConfigError("journal.segment_bytes", "must be >= uart.max_frame")
    sim = raw.get("sim")
    if sim is not None:
        if not isinstance(sim, dict) or not isinstance(sim.get("host"), str) or not _num(sim.get("port")):
            raise ConfigError("sim", 'must be {"host": "...", "port": N}')
        sim = {"host": sim["host"], "port": int(sim["port"])}
    cfg["sim"] = sim
    # "uart" is accepted (and ignored) on an MQTT node: config.example.json shows every field
    known = ("node", "site", "board", "link", "key", "rtc", "sim", "uart") + tuple(_DEFAULTS)
    for k in raw:
        if k not in known and not k.startswith("_"):
            raise ConfigError(k, "unknown field (typo?)")
    return cfg


def load(path="config.json"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config", "no %s on the filesystem (copy config.example.json)" % path)
    try:
        raw = json.loads(text)
    except ValueError:
        raise ConfigError("config", "%s is not valid JSON" % path)
    return validate(raw)

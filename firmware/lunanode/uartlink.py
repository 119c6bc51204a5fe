# The UART link, for nodes without WiFi (config "link": "uart"): the journal streamed as
# COBS frames on a UART to `lunabase gateway`, telecommands read back from the same UART.
# Imported only when configured (app.preload): an MQTT node never loads it.
#
# Uplink frame:   COBS(one or more TM packets back to back) 0x00    (wire/cobs.py)
#                 COBS(status JSON, starts with "{")        0x00    (birth / periodic)
# Downlink frame: COBS(one or more TC packets back to back) 0x00
# One 0x00 is written when the port opens, so the gateway resyncs after boot output.
#
# There is no acknowledgement on a raw UART.  In custody mode (journal.custody_s > 0,
# docs/custody.md) a packet stays in the journal until the ground's custody
# acknowledgement comes back down the UART through the gateway (a TC-format frame like a
# command); what is not confirmed within custody_s is sent again from the custody point,
# so a gateway that dies (with frames read but not yet published, or publishes not yet
# acknowledged by the broker) loses nothing.  Without custody a packet counts as
# delivered once its whole frame is written to the UART; bytes lost on the wire show up
# on the ground as sequence gaps and only REPLAY can re-send them.  A write that fails
# rewinds the send cursor (the frame is sent again whole).  The link does not hibernate: a UART costs no radio power, so NIGHT and
# EMERGENCY only slow the sensors (next_contact stays 0).
#
# Status: the node has no broker session, so it sends its status JSON (the same fields as
# the MQTT birth, plus "link" and the UART receive counters) as a frame when the port
# opens, every uart.status_s and after a mode change; the gateway publishes it retained on
# the status topic and publishes "offline" itself when the node falls silent (docs/hil.md).
#
# Allocation: the packets are read from the journal into tx[k:] (k = COBS overhead of a
# full frame) and COBS-encoded in place into tx[0:], then written with write(buf, off, n):
# no per-packet allocation (tests/firmware/test_uart_link.py checks it under heap_lock).
import asyncio
import json
import select
import time
from micropython import const
from wire import ccsds, cobs, defs
from lunanode.power import NAMES

_RX_CHUNK = const(64)
_EAGAIN = const(11)


class UartLink:
    def __init__(self, app):
        self.app = app
        u = app.cfg["uart"]
        self.u = u
        n = u["max_frame"]
        self.k = n // 254 + 1  # COBS overhead of n bytes: where the packets are read to
        self.cap = n
        self.tx = bytearray(self.k + n + 1)  # + the 0x00 delimiter
        self.src = memoryview(self.tx)[self.k :]  # preallocated view of the packet area
        self.rx = bytearray(_RX_CHUNK)
        self.deframer = cobs.Deframer(u["rx_max"], self._on_frame)
        self.port = None
        self.poller = None
        self.state = defs.LINK_STATE_DOWN
        self.reconnects = 0
        self.opens = 0
        self.next_contact = 0  # the UART link never sleeps
        self.kick = asyncio.Event()
        self.replay = None  # [apid, from_seq, count, cursor]
        self.tx_frames = 0
        self.tx_errors = 0
        self.rx_frames = 0  # TC frames handed to the telecommand path
        self.rx_short = 0  # rejected TC frames by reason (COBS errors: deframer.malformed)
        self.rx_crc = 0
        self.rx_errors = 0  # read errors (unix pty with no peer)
        self.last_error = ""
        self.status_mode = -1

    # -- the interface app, sensors, telecommand and power use ---------------------------
    def inflight(self):
        return 0  # nothing waits for an acknowledgement on a raw UART

    def request_replay(self, apid, frm, count):
        self.replay = [apid, frm, count, [0, 0]]
        self.kick.set()
        return True

    def status_json(self, state):
        a = self.app
        d = self.deframer
        return json.dumps(
            {
                "state": state,
                "mode": NAMES[a.power.mode],
                "boot": a.health.boots,
                "next_contact": 0,
                "hk_period": a.sched.hk_period() // 1000,
                "dict_crc": defs.DICT_CRC,
                "fw": a.version,
                "journal_bytes": a.journal.seg_bytes * a.journal.max_segs,
                "link": "uart",
                "rx_frames": self.rx_frames,
                "rx_rejected": {"cobs": d.malformed, "short": self.rx_short, "bad_crc": self.rx_crc},
                "custody": a.journal.cu[4:],  # confirmed, re-sends, rejected acks, dropped-through x 8
            }
        )

    # -- receive ---------------------------------------------------------------------------
    def _on_frame(self, mv):
        # one decoded downlink frame: TC packets back to back; a frame whose packets do not
        # parse or fail their CRC is line noise, counted and dropped before the telecommand
        # path (which then only sees what a gateway really sent: MAC/counter checks, ACKs)
        n = len(mv)
        o = 0
        while o < n:
            if n - o < ccsds.OVERHEAD:
                self.rx_short += 1
                return
            t = ((mv[o + 4] << 8) | mv[o + 5]) + 7
            if o + t > n:
                self.rx_short += 1
                return
            if not ccsds.check(mv, o, t):
                self.rx_crc += 1
                return
            o += t
        self.rx_frames += 1
        self.app.tc.on_message(None, mv, False)

    def _pump_rx(self):
        p = self.port
        pl = self.poller
        if p is None or pl is None:
            return
        for _o, ev in pl.ipoll(0):
            if ev & select.POLLIN:
                try:
                    k = p.readinto(self.rx, _RX_CHUNK)
                except OSError:  # unix port: a pty whose other end is closed (EIO)
                    self.rx_errors += 1
                    return
                if k:
                    self.deframer.feed(self.rx, k)

    # -- send --------------------------------------------------------------------------------
    async def _write(self, m):
        # write tx[0:m] whole; a non-blocking port may take it in pieces
        p = self.port
        if p is None:
            raise OSError("uart not open")
        o = 0
        while o < m:
            try:
                w = p.write(self.tx, o, m - o)  # stream write(buf, off, n): no slice
            except OSError as e:
                if e.args[0] != _EAGAIN:
                    raise
                w = 0
            if w:
                o += w
            else:
                await asyncio.sleep_ms(5)  # would block: let the loop run
        self.tx_frames += 1

    async def _send_packets(self, n):
        # tx[k:k+n] holds whole packets: COBS in place (the encoder never overtakes its
        # source: it writes at most 1 + i + i // 254 bytes after reading i), delimiter, write
        m = cobs.encode_into(self.src, self.tx, n, 0)
        self.tx[m] = 0
        await self._write(m + 1)

    async def _send_status(self, state):
        s = self.status_json(state).encode()
        self.status_mode = self.app.power.mode
        n = len(s)
        if n > self.cap:
            return
        self.src[:n] = s
        await self._send_packets(n)

    # -- main loop -------------------------------------------------------------------------
    def _open(self):
        b = self.app.board
        self.port = b.open_uart(self.u) if hasattr(b, "open_uart") else self._open_unix()
        pl = select.poll()
        pl.register(self.port, select.POLLIN)
        self.poller = pl
        self.opens += 1
        if self.opens > 1:
            self.reconnects += 1

    def _open_unix(self):
        # the sim board (unix port) has no UART: the port is an inherited file descriptor
        # (uart.fd, kept across link restarts) or a tty path (uart.path, reopened, set raw).
        # Here rather than in board/sim.py so MQTT nodes on a 100 KB heap never load it.
        u = self.u
        old = self.port
        if u["fd"] >= 0:
            return old if old is not None else open(u["fd"], "r+b")
        if old is not None:
            try:
                old.close()
            except OSError:
                pass
        self.port = None
        f = open(u["path"], "r+b")
        try:
            import termios  # pyright: ignore[reportMissingImports]  # unix port only

            termios.setraw(f.fileno())
        except (ImportError, OSError):
            pass  # not a tty (a FIFO, a file): nothing to set
        return f

    async def run(self):
        a = self.app
        while True:
            try:
                self._open()
                self.tx[0] = 0
                await self._write(1)  # resync the gateway after boot output
                self.state = defs.LINK_STATE_UP
                a.events.emit(defs.EVENT_LINK_UP, defs.SEVERITY_INFO, 0, self.reconnects, "uart")
                await self._session()
            except Exception as e:  # OSError from the port: count, back off, reopen
                self.last_error = repr(e)
                self.tx_errors += 1
            if self.state == defs.LINK_STATE_UP:
                a.events.emit(defs.EVENT_LINK_DOWN, defs.SEVERITY_WARNING, 0, 0, self.last_error[:24])
            self.state = defs.LINK_STATE_DOWN
            a.board_log("uart link down: " + self.last_error)
            await asyncio.sleep_ms(1000)

    async def _session(self):
        a = self.app
        j = a.journal
        every = self.u["status_s"] * 1000
        await self._send_status("online")
        last_status = time.ticks_ms()
        j.custody_due(True)  # the port (re)opened: what the ground has not confirmed goes again
        while True:
            self._pump_rx()
            j.custody_due()
            if time.ticks_diff(time.ticks_ms(), last_status) >= every or self.status_mode != a.power.mode:
                last_status = time.ticks_ms()
                await self._send_status("online")
                continue
            if self.replay:
                r = self.replay
                n, k = j.find(r[0], r[1], r[2], self.src, self.cap, r[3])
                if not n:
                    self.replay = None
                else:
                    await self._send_packets(n)
                continue
            if j.pending():
                n, k = j.read_batch(self.src, self.cap)
                if n:
                    seg = j.batch_seg
                    off = j.batch_off
                    try:
                        await self._send_packets(n)
                    except Exception:
                        j.rewind(seg, off)  # not (wholly) written: send it again
                        raise
                    j.ack(seg, off + n, k)  # written = delivered, unless in custody mode (a no-op then)
                    continue
            await asyncio.sleep_ms(10)  # idle: also the receive poll period (no allocation)

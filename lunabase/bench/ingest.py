"""`lunabase bench ingest`: broker -> archive throughput and latency, next to a naive baseline.

One run starts a private mosquitto on loopback (pinned to the publisher's core), then for each case a fresh SQLite archive,
an ingest process pinned to one core (os.sched_setaffinity) and a publisher process on
the other core (a minimal MQTT 3.1.1 client on a plain socket writing prebuilt QoS 1
PUBLISH frames, so the load generator is never the bottleneck).  Cases:

* one_per_message: one 56-byte HK packet per MQTT message;
* batched: PER_MESSAGE HK packets per message (a node flushing its journal);
* latency: one packet per message at a fixed rate; the publisher stamps each packet's
  time tag with its send time and the ingest sink measures, right after the archive
  commit containing it, commit time - send time.

Lost and duplicates are counted by reading the archive back and comparing every
(node, seq, time tag) with what was published.  The naive baseline is a paho subscriber
decoding with struct + binascii.crc_hqx and doing one SQLite INSERT per packet (commit
per message; every HK field decoded and calibrated, one column each), on the same core
with the same publisher.
"""

from __future__ import annotations

import argparse
import binascii
import json
import multiprocessing as mp
import os
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wire import ccsds, timetag
from wire.defs import APID_HK

PER_MESSAGE = 20
NODES = 10
SITE = "bench"


# ------------------------------------------------------------------ packets
def _hk_template() -> tuple[bytes, int]:
    from wire.dictionary import load

    p = load().packet(APID_HK)
    return bytes(p.length), p.length


def make_packet(buf: bytearray, off: int, seq: int, ticks: int, length: int) -> None:
    """An HK packet at buf[off:off+length] (payload: uptime = seq, free_heap = 50000)."""
    struct.pack_into(">HHHIH", buf, off, 0x0800 | APID_HK, 0xC000 | (seq & ccsds.SEQ_MASK), length - 7,
                     (ticks >> 16) & 0xFFFFFFFF, ticks & 0xFFFF)
    struct.pack_into(">IHBBI", buf, off + 12, seq, 1, 0, 0, 50000)
    c = binascii.crc_hqx(memoryview(buf)[off:off + length - 2], 0xFFFF)
    buf[off + length - 2] = c >> 8
    buf[off + length - 1] = c & 0xFF


def _now_ticks() -> int:
    return timetag.unix_to_ticks(time.time())


# ------------------------------------------------------------------ publisher
def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _RawPublisher:
    """A minimal MQTT 3.1.1 QoS 1 publisher on a plain socket: the load generator.

    The benchmark measures the subscriber, so the publisher must not be the bottleneck:
    paho's Python client (a network thread, a lock and a callback per message) tops out
    near the subscriber's own rate on a shared core.  This one writes prebuilt PUBLISH
    frames in large writes and counts PUBACKs (4 bytes each), keeping at most
    ``window`` messages unacknowledged so a packet id is never reused while in flight.
    """

    def __init__(self, port: int, client_id: str, window: int = 20000) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        var = b"\x00\x04MQTT\x04\x02" + (60).to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + _varlen(len(var)) + var)
        ack = b""
        while len(ack) < 4:
            chunk = self.sock.recv(4 - len(ack))
            if not chunk:
                raise ConnectionError("broker closed the connection before CONNACK")
            ack += chunk
        if ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {ack.hex()}")
        self.window = window
        self.sent = self.acked = 0
        self._pid = 0
        self._rest = 0  # bytes of a PUBACK split across reads

    def frame(self, topic: bytes, payload: bytes) -> bytes:
        self._pid = self._pid % 65535 + 1
        body = len(topic).to_bytes(2, "big") + topic + self._pid.to_bytes(2, "big") + payload
        return b"\x32" + _varlen(len(body)) + body

    def _read_acks(self, block: bool) -> None:
        import socket

        try:
            data = self.sock.recv(65536, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError("broker closed the connection")
        n = self._rest + len(data)  # PUBACKs are 4 bytes each; nothing else comes to a publisher
        self.acked += n // 4
        self._rest = n % 4

    def send(self, frames: list[bytes]) -> None:
        while self.sent - self.acked + len(frames) > self.window:
            self._read_acks(True)
        self.sock.sendall(b"".join(frames))
        self.sent += len(frames)
        self._read_acks(False)

    def close(self) -> None:
        while self.acked < self.sent:
            self._read_acks(True)
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def publisher(port: int, total: int, per_msg: int, rate: float, base_ticks: int, cpu: int | None,
              qos: int = 1) -> None:
    """Publish `total` HK packets spread over NODES nodes, per_msg per message, QoS 1.

    rate > 0: paced at `rate` packets/s and stamped with the send time; else as fast as
    possible with synthetic time tags (base_ticks + index), the messages built before
    the first is sent.
    """
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if qos != 1:
        raise ValueError("the bench publishes QoS 1 only")
    _t, length = _hk_template()
    topics = [f"lunabase/{SITE}/n{i:03d}/tm".encode() for i in range(NODES)]
    seqs = [0] * NODES
    n_msgs = total // per_msg
    pub = _RawPublisher(port, f"bench-pub-{os.getpid()}")

    def message(m: int, ticks0: int) -> bytes:
        node = m % NODES
        buf = bytearray(length * per_msg)
        for k in range(per_msg):
            make_packet(buf, k * length, seqs[node], ticks0 + k, length)
            seqs[node] += 1
        return pub.frame(topics[node], bytes(buf))

    if rate > 0:
        t0 = time.perf_counter()
        for m in range(n_msgs):
            d = t0 + m * per_msg / rate - time.perf_counter()
            if d > 0:
                time.sleep(d)  # no spinning: on 2 cores a spinning publisher starves the broker
            pub.send([message(m, _now_ticks())])
    else:
        frames = [message(m, base_ticks + m * per_msg) for m in range(n_msgs)]
        chunk = max(1, 64 * 1024 // len(frames[0])) if frames else 1
        for i in range(0, n_msgs, chunk):
            pub.send(frames[i:i + chunk])
    pub.close()


# ------------------------------------------------------------------ lunabase ingest
def ingest_proc(port: int, db: str, expected: int, cpu: int | None, out: Any, timeout: float, ident: str) -> None:
    import asyncio

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import numpy as np

    import ground.parse as gp
    from ground.archive import open_archive
    from ground.ingest import IngestWorker

    class Sink:
        def __init__(self) -> None:
            self.fresh = 0
            self.first = 0.0
            self.last = 0.0
            self.lat: list[np.ndarray] = []
            self.deliv: list[np.ndarray] = []

        def on_packets(self, site, node, result, fresh, received):
            now = time.time()
            if not self.first:
                self.first = received
            n = int(fresh.sum())
            self.fresh += n
            self.last = now
            sent = timetag.ticks_to_unix(result.ticks[fresh])
            self.lat.append(now - sent)
            self.deliv.append(received - sent)

        def on_status(self, site: str, node: str, status: dict[str, Any], received: float) -> None: ...

        def on_rejected(self, site: str, node: str, rejected: Any, payload: bytes) -> None: ...

    async def main() -> dict[str, Any]:
        archive = open_archive(db)
        sink = Sink()
        w = IngestWorker(archive, "127.0.0.1", port, client_id=ident, sinks=[sink])
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(w.connected.wait(), 30)
        out.put("ready")
        cpu0 = time.process_time()
        deadline = time.monotonic() + timeout
        while sink.fresh < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cpu = time.process_time() - cpu0
        w.stop()
        await asyncio.wait_for(task, 30)
        snap = w.stats()["totals"]
        archive.close()
        lat = np.concatenate(sink.lat) * 1000 if sink.lat else np.zeros(0)
        deliv = np.concatenate(sink.deliv) * 1000 if sink.deliv else np.zeros(0)
        span = (sink.last - sink.first) if sink.first else 0.0
        return {
            "parser": gp.IMPLEMENTATION,
            "fresh": sink.fresh,
            "span_s": span,
            "duplicates_dropped": snap["duplicates"],
            "batches": snap["batches"],
            "cpu_s": cpu,
            "lat": [float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max()),
                    float(np.percentile(deliv, 50)), float(np.percentile(deliv, 99))] if len(lat) else None,
        }

    out.put(asyncio.run(main()))


# ------------------------------------------------------------------ naive baseline
def naive_proc(port: int, db: str, expected: int, cpu: int | None, out: Any, timeout: float, ident: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conn = sqlite3.connect(db, check_same_thread=False)  # used from paho's network thread
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    from wire.dictionary import load

    hkdef = load().packet(APID_HK)
    names = [f.name for f in hkdef.fields]
    conn.execute("CREATE TABLE IF NOT EXISTS hk (node TEXT, apid INT, seq INT, ticks INT, received REAL, data BLOB, "
                 + ", ".join(f"{n} REAL" for n in names) + ")")
    insert = f"INSERT INTO hk VALUES ({','.join('?' * (6 + len(names)))})"
    scales = [(f.scale, f.add) for f in hkdef.fields]
    hdr = struct.Struct(">HHHIH")
    body = struct.Struct(hkdef.payload_format)  # every HK field, calibrated like the real decoder
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(client, userdata, msg):
        now = time.time()
        if not state["first"]:
            state["first"] = now
        node = msg.topic.split("/")[2]
        data = msg.payload
        p = 0
        while p + 14 <= len(data):
            w0, w1, ln, coarse, fine = hdr.unpack_from(data, p)
            total = ln + 7
            if p + total > len(data):
                break
            if binascii.crc_hqx(data[p:p + total - 2], 0xFFFF) != (data[p + total - 2] << 8 | data[p + total - 1]):
                p += 1
                continue
            f = body.unpack_from(data, p + 12)
            eng = [v * sc + ad for v, (sc, ad) in zip(f, scales, strict=True)]
            conn.execute(insert, (node, w0 & ccsds.APID_MASK, w1 & ccsds.SEQ_MASK, (coarse << 16) | fine, now, data[p:p + total], *eng))
            state["n"] += 1
            p += total
        conn.commit()
        state["last"] = time.time()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident, clean_session=True)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe("lunabase/+/+/tm", qos=1)
    c.loop_start()
    time.sleep(0.3)
    out.put("ready")
    cpu0 = time.process_time()
    deadline = time.monotonic() + timeout
    while state["n"] < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    used = time.process_time() - cpu0
    c.loop_stop()
    c.disconnect()
    conn.close()
    out.put({"parser": "struct+crc_hqx", "fresh": state["n"], "span_s": state["last"] - state["first"], "cpu_s": used})


# ------------------------------------------------------------------ read back
def published_keys(total: int, per_msg: int, base_ticks: int) -> set[tuple[str, int, int]]:
    """(node, seq, time tag) of every packet an unpaced publisher sends."""
    out = set()
    seqs = [0] * NODES
    for m in range(total // per_msg):
        node = m % NODES
        for k in range(per_msg):
            out.add((f"n{node:03d}", seqs[node] & ccsds.SEQ_MASK, base_ticks + m * per_msg + k))
            seqs[node] += 1
    return out


def read_back(db: str, naive: bool, total: int, per_msg: int, base_ticks: int | None) -> tuple[int, int, int]:
    """(archived rows, lost, duplicates) by comparing archive keys with what was published.

    Unpaced runs compare (node, seq, time tag) exactly; paced runs (time tags are send
    times) compare (node, seq), each node sending fewer than ccsds.SEQ_MOD packets (a count never wraps).
    """
    conn = sqlite3.connect(db)
    if naive:
        rows = conn.execute("SELECT node, seq, ticks FROM hk").fetchall()
    else:
        rows = conn.execute("SELECT n.node, r.seq, r.ticks FROM raw r JOIN nodes n ON n.id = r.node_id").fetchall()
    conn.close()
    if base_ticks is not None:
        want = published_keys(total, per_msg, base_ticks)
        got = [(n, s, t) for n, s, t in rows]
    else:
        want = {(f"n{i % NODES:03d}", s) for i in range(NODES) for s in range(total // NODES)}
        got = [(n, s) for n, s, _t in rows]
    seen = set(got)
    return len(rows), len(want - seen), len(got) - len(seen)


def run_case(port: int, which: str, total: int, per_msg: int, rate: float, cpus: list[int], workdir: Path,
             timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    db = str(workdir / f"{which}-{per_msg}-{int(rate)}-{time.time_ns()}.db")
    ident = f"bench-{which}-{time.time_ns()}"
    target = ingest_proc if which == "lunabase" else naive_proc
    ing_cpu = cpus[-1] if cpus else None
    pub_cpu = cpus[0] if len(cpus) > 1 else None
    proc = ctx.Process(target=target, args=(port, db, total, ing_cpu, q, timeout, ident))
    proc.start()
    ready = q.get(timeout=60)
    assert ready == "ready"
    base = _now_ticks()
    pub = ctx.Process(target=publisher, args=(port, total, per_msg, rate, base, pub_cpu))
    t0 = time.time()
    pub.start()
    res = q.get(timeout=timeout + 60)
    wall = time.time() - t0
    pub.join(30)
    if pub.is_alive():
        pub.kill()
    proc.join(30)
    rows, lost, dup = read_back(db, which == "naive", total, per_msg, None if rate > 0 else base)
    span = res.pop("span_s") or wall
    out = {
        "packets": total,
        "packets_per_message": per_msg,
        "packets_per_s": round(res["fresh"] / span, 1) if span else 0.0,
        "messages_per_s": round(res["fresh"] / per_msg / span, 1) if span else 0.0,
        "archived": rows,
        "lost": lost,
        "duplicates": dup,
        "parser": res["parser"],
        "seconds": round(span, 3),
        # load-independent view: packets archived per CPU-second the subscriber process used
        "packets_per_cpu_s": round(res["fresh"] / res["cpu_s"], 1) if res.get("cpu_s") else None,
    }
    if "batches" in res:
        out["commits"] = res["batches"]
        out["redeliveries_dropped"] = res["duplicates_dropped"]
    if res.get("lat") and rate > 0:  # unpaced runs carry synthetic time tags: no latency
        out["latency_ms"] = {"p50": round(res["lat"][0], 3), "p99": round(res["lat"][1], 3),
                             "max": round(res["lat"][2], 3),
                             # publish -> picked up by the ingest (broker + MQTT client), the rest is
                             # parse + archive commit
                             "to_ingest_p50": round(res["lat"][3], 3), "to_ingest_p99": round(res["lat"][4], 3)}
    for f in Path(db).parent.glob(Path(db).name + "*"):
        f.unlink()
    return out


def run(quick: bool = False, per_message: int = PER_MESSAGE, rate: float = 5000.0,
        progress: Any = None) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-able result."""
    import ground.parse as gp
    from sim.mosquitto import Mosquitto

    say = progress or (lambda s: None)
    cpus = sorted(os.sched_getaffinity(0))
    scale = 0.3 if quick else 1.0
    n_one = int(60000 * scale) // NODES * NODES
    n_batch = int(400000 * scale) // (NODES * per_message) * NODES * per_message
    n_naive = int(20000 * scale) // NODES * NODES
    n_lat = int(rate * 5 * scale) // NODES * NODES
    res: dict[str, Any] = {"parser": gp.IMPLEMENTATION, "cpus": len(cpus), "ingest_pinned_to_cpu": cpus[-1],
                           "packet": "HK, 56 bytes, 10 nodes, QoS 1", "load_avg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="lunabase-bench-") as tmp, Mosquitto(persistence=False) as broker:
        w = Path(tmp)
        if len(cpus) > 1 and broker.proc is not None:
            # the broker with the publisher, off the ingest's core (else it takes turns with the ingest there)
            os.sched_setaffinity(broker.proc.pid, {cpus[0]})
            res["broker_pinned_to_cpu"] = cpus[0]
        say(f"mosquitto on 127.0.0.1:{broker.port}; ingest pinned to CPU {cpus[-1]}; parser {gp.IMPLEMENTATION}")
        lb: dict[str, Any] = {}
        nv: dict[str, Any] = {}
        say(f"lunabase one packet per message: {n_one} packets")
        lb["one_per_message"] = run_case(broker.port, "lunabase", n_one, 1, 0, cpus, w, 60)
        say(f"  {lb['one_per_message']['packets_per_s']:.0f} packets/s")
        say(f"lunabase batched, {per_message} packets per message: {n_batch} packets")
        lb["batched"] = run_case(broker.port, "lunabase", n_batch, per_message, 0, cpus, w, 60)
        say(f"  {lb['batched']['packets_per_s']:.0f} packets/s")
        say(f"naive one packet per message: {n_naive} packets")
        nv["one_per_message"] = run_case(broker.port, "naive", n_naive, 1, 0, cpus, w, 60)
        say(f"  {nv['one_per_message']['packets_per_s']:.0f} packets/s")
        say(f"naive batched: {n_naive * 2} packets")
        nv["batched"] = run_case(broker.port, "naive", n_naive * 2 // (NODES * per_message) * NODES * per_message,
                                 per_message, 0, cpus, w, 60)
        say(f"  {nv['batched']['packets_per_s']:.0f} packets/s")
        say(f"latency at {rate:.0f} packets/s, one per message: {n_lat} packets")
        lat = run_case(broker.port, "lunabase", n_lat, 1, rate, cpus, w, 60)
    res["lunabase"] = {**lb, "packets_per_s": lb["batched"]["packets_per_s"],
                       "lost": lb["one_per_message"]["lost"] + lb["batched"]["lost"] + lat["lost"],
                       "duplicates": lb["one_per_message"]["duplicates"] + lb["batched"]["duplicates"]
                       + lat["duplicates"]}
    res["naive"] = {**nv, "packets_per_s": nv["batched"]["packets_per_s"],
                    "lost": nv["one_per_message"]["lost"] + nv["batched"]["lost"],
                    "duplicates": nv["one_per_message"]["duplicates"] + nv["batched"]["duplicates"]}
    res["load_avg_after"] = os.getloadavg()[0]
    lm = lat.get("latency_ms") or {}
    res["latency_ms"] = {"rate": rate, "packets_per_message": 1, **lm, "lost": lat["lost"],
                         "duplicates": lat["duplicates"]}
    res["speedup"] = {k: round(lb[k]["packets_per_s"] / nv[k]["packets_per_s"], 1) if nv[k]["packets_per_s"] else None
                      for k in ("one_per_message", "batched")}
    res["targets"] = {
        "batched_ge_150k": lb["batched"]["packets_per_s"] >= 150_000,
        "one_per_message_ge_25k": lb["one_per_message"]["packets_per_s"] >= 25_000,
        "no_loss_no_duplicates": res["lunabase"]["lost"] == 0 and res["lunabase"]["duplicates"] == 0,
        "p99_lt_25ms": lm.get("p99") is not None and lm["p99"] < 25.0,
    }
    return res


def _cmd(args: argparse.Namespace) -> int:
    progress = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    res = run(quick=args.quick, per_message=args.per_message, rate=args.rate, progress=progress)
    if args.json:
        print(json.dumps(res))
    else:
        print(json.dumps(res, indent=2))
    return 0


def register(bench_subparsers: Any) -> None:
    """Add `ingest` to the `lunabase bench` subcommands."""
    p = bench_subparsers.add_parser(
        "ingest",
        help="broker -> archive throughput and latency vs a naive baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    p.add_argument("--quick", action="store_true", help="a smaller run (~1/3 of the packets)")
    p.add_argument("--per-message", type=int, default=PER_MESSAGE, help="packets per message in the batched case")
    p.add_argument("--rate", type=float, default=5000.0, help="packets/s of the latency case")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m lunabase.bench.ingest")
    sub = ap.add_subparsers()
    register(sub)
    a = ap.parse_args(["ingest", *sys.argv[1:]])
    sys.exit(a.func(a))

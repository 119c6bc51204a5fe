"""`lunabase bench parse`: packets/s of the Cython parser, its pure-Python twin, a naive
pure-Python baseline and a CRC-only pass, on the same bytes.

Three workloads:

* housekeeping  HK packets back to back (56 bytes, 18 fields)
* seismic       seismic batches back to back (616 bytes: a field and 100 x 3 int16 samples)
* mixed         what a real-firmware node publishes: its journal's packets in the order
                the firmware writes them at its default rates (firmware/lunanode/config.py:
                HK every 1 s, POWER 5 s, THERMAL and RADIATION 10 s, a 100-sample SEISMIC
                batch every 1 s at 100 Hz, an EVENT now and then), time-tagged and
                sequence-counted per APID, as one buffer (a journal drain, a replay or a
                serial stream; the per-message costs of 1 kB MQTT containers are what
                `lunabase bench ingest` measures)

For each:

* cython    ground.parse.CParser().parse(container): validate, CRC, decode everything
* python    the pure-Python reference twin, same call, same results
* naive     what one would write first: per packet struct.unpack_from for the header,
            binascii.crc_hqx for the CRC, struct for every field (and every sample),
            raw * scale + add per field into lists
* crc_only  the fastest CRC here (the parser's own slicing-by-8 CRC compiled for the
            same level, four packets at a time when four of the same length follow,
            else two, else one) walking the packets by their length field and checking
            each CRC, nothing else (ground.parse._bench_c, not in the parser)

Each round repeats a call for at least --seconds; the figure is the median over
--rounds.  cython and crc_only are timed call by call in alternation (one cython call,
one crc_only call, ...) and cython_vs_crc_only is the median of the per-pair ratios over
all rounds, so load from elsewhere on a shared host lands on both sides alike
(cython_vs_crc_only_rounds: each round's median; cython_vs_crc_only_fastest: the
fastest call of each, a second steady estimate).  Progress goes to stderr; --json prints
one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# numpy's OpenBLAS threads spin on the other core after start-up; nothing here uses BLAS,
# so keep them from competing with the measured thread (only effective before numpy loads)
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

WORKLOADS: dict[str, tuple[str | None, int]] = {"housekeeping": ("HK", 10_000), "seismic": ("SEISMIC", 1_000), "mixed": (None, 10_000)}
IMPLS = ("cython", "python", "naive", "crc_only")

# The firmware's default rates (firmware/lunanode/config.py _DEFAULTS["rates"]; a test
# holds these to it) as periods in seconds, and how often an EVENT goes out (link up/down,
# telecommand executed, time sync...: no fixed rate; one a minute here)
NODE_PERIODS_S = {"HK": 1.0, "POWER": 5.0, "THERMAL": 10.0, "RADIATION": 10.0, "SEISMIC": 100 / 100}
EVENT_PERIOD_S = 60.0


def node_schedule(n: int) -> list[tuple[float, str]]:
    """The first n (time, packet name) a node at the default rates writes to its journal,
    in the order it writes them.  The periodic tasks start together at boot (HK, POWER,
    THERMAL, RADIATION in the scheduler's start order); a SEISMIC batch is complete half a
    second into each second (polled 4 times per batch); EVENTs fall between the others."""
    out: list[tuple[float, int, str]] = []
    horizon = 1.0
    while len(out) < n:
        out.clear()
        for order, (name, period) in enumerate(NODE_PERIODS_S.items()):
            phase = 0.5 if name == "SEISMIC" else 0.0
            k = 0
            while k * period + phase < horizon:
                out.append((k * period + phase, order, name))
                k += 1
        k = 0
        while k * EVENT_PERIOD_S + 0.25 < horizon:
            out.append((k * EVENT_PERIOD_S + 0.25, 9, "EVENT"))
            k += 1
        horizon *= 2
    out.sort()
    return [(t, name) for t, _o, name in out[:n]]


def make_container(name: str | None, n: int, seed: int = 1) -> bytes:
    """n valid packets of dictionary packet `name` back to back, random field values;
    name None: the mixed workload (node_schedule's first n packets)."""
    from wire import ccsds
    from wire.dictionary import load

    if name is None:
        return make_mixed(n, seed)
    p = load().packet(name)
    rnd = random.Random(seed)
    out = bytearray(p.length * n)
    for i in range(n):
        off = i * p.length
        ccsds.pack_header(out, off, ccsds.TYPE_TM, p.apid, i, p.length, 800_000_000 + i, rnd.getrandbits(16))
        out[off + ccsds.HEADER_LEN : off + p.length - 2] = rnd.randbytes(p.length - ccsds.OVERHEAD)
        c = _crc_hqx(memoryview(out)[off : off + p.length - 2])
        out[off + p.length - 2] = c >> 8
        out[off + p.length - 1] = c & 0xFF
    return bytes(out)


def make_mixed(n: int, seed: int = 1) -> bytes:
    """The mixed workload: n packets as a node at the default rates journals them, each
    with its APID's next sequence count, its time tag and random field values."""
    from wire import ccsds
    from wire.dictionary import load

    d = load()
    rnd = random.Random(seed)
    seqs: dict[int, int] = {}
    out = bytearray()
    for t, name in node_schedule(n):
        p = d.packet(name)
        off = len(out)
        out += bytes(p.length)
        seq = seqs.get(p.apid, 0)
        seqs[p.apid] = (seq + 1) & ccsds.SEQ_MASK
        coarse = 800_000_000 + int(t)
        ccsds.pack_header(out, off, ccsds.TYPE_TM, p.apid, seq, p.length, coarse, int((t % 1) * 65536))
        out[off + ccsds.HEADER_LEN : off + p.length - 2] = rnd.randbytes(p.length - ccsds.OVERHEAD)
        c = _crc_hqx(memoryview(out)[off : off + p.length - 2])
        out[off + p.length - 2] = c >> 8
        out[off + p.length - 1] = c & 0xFF
    return bytes(out)


def _crc_hqx(b: Any) -> int:
    import binascii

    return binascii.crc_hqx(b, 0xFFFF)


def naive_parser() -> Callable[[bytes], int]:
    """The baseline: struct.unpack_from + binascii.crc_hqx per packet, all fields decoded."""
    import binascii
    import struct

    from wire import ccsds
    from wire.dictionary import load

    d = load()
    hdr = struct.Struct(ccsds.HEADER_FMT)
    apid_mask, seq_mask = ccsds.APID_MASK, ccsds.SEQ_MASK
    layouts = {}
    for p in d.packets:
        fmt = struct.Struct(p.payload_format)
        samp = None
        if p.samples is not None:
            samp = (struct.Struct(f">{p.samples.count * len(p.samples.axes)}h"), p.samples.offset)
        layouts[p.apid] = (p.length, fmt, None, samp)

    def parse(data: bytes) -> int:
        mv = memoryview(data)
        n = len(data)
        p = 0
        out = []
        crc_hqx = binascii.crc_hqx
        while p + 6 <= n:
            w0, w1, ln, coarse, fine = hdr.unpack_from(mv, p)
            total = ln + 7
            lay = layouts.get(w0 & apid_mask)
            if w0 >> 13 or lay is None or total != lay[0] or p + total > n:
                p += 1
                continue
            if crc_hqx(mv[p : p + total - 2], 0xFFFF) != (data[p + total - 2] << 8) | data[p + total - 1]:
                p += 1
                continue
            # every field (and every sample) decoded; the calibration is left out, which
            # keeps this baseline as fast as a first implementation gets
            raw = lay[1].unpack_from(mv, p + 12)
            samples = lay[3][0].unpack_from(mv, p + lay[3][1]) if lay[3] else None
            out.append((w0 & apid_mask, w1 & seq_mask, (coarse << 16) | fine, raw, samples))
            p += total
        return len(out)

    return parse


def _measure(fn: Callable[[], Any], seconds: float) -> float:
    """Seconds per call: repeat for at least `seconds` (at least once)."""
    fn()  # warm up (allocator, caches)
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return dt / n


def _measure_pair(fa: Callable[[], Any], fb: Callable[[], Any], seconds: float
                  ) -> tuple[float, float, list[float], float, float]:
    """fa and fb timed call by call in alternation for at least `seconds`: mean seconds
    per call of each, the per-pair ratios t(fb) / t(fa), and each one's fastest call."""
    fa()
    fb()
    clock = time.perf_counter
    ta = tb = 0.0
    ma = mb = float("inf")
    ratios = []
    while ta + tb < seconds or not ratios:
        t0 = clock()
        fa()
        t1 = clock()
        fb()
        t2 = clock()
        ta += t1 - t0
        tb += t2 - t1
        ma = min(ma, t1 - t0)
        mb = min(mb, t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    n = len(ratios)
    return ta / n, tb / n, ratios, ma, mb


def run(rounds: int = 5, seconds: float = 0.25, packets: dict[str, int] | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The benchmark as a dict (what --json prints)."""
    from ground.parse import CYTHON_ERROR, CParser, PyParser

    if CParser is None:
        raise SystemExit(f"the Cython parser is not built ({CYTHON_ERROR}): run scripts/setup.sh")
    from ground.parse import _bench_c, _parse_c

    level = _parse_c.simd()
    say = progress or (lambda s: None)
    result: dict[str, Any] = {}
    for wl, (pname, default_n) in WORKLOADS.items():
        n = packets.get(wl, default_n) if packets else default_n
        data = make_container(pname, n)
        plen = len(data) / n
        cp, pp, naive = CParser(), PyParser(), naive_parser()
        # all four see the same bytes and must agree on what is in them
        assert cp.parse(data).count == pp.parse(data).count == naive(data) == _bench_c.crc_scan(data, level)[0] == n
        fns: dict[str, Callable[[], Any]] = {
            "cython": lambda cp=cp, data=data: cp.parse(data),
            "crc_only": lambda data=data: _bench_c.crc_scan(data, level),
            "python": lambda pp=pp, data=data: pp.parse(data),
            "naive": lambda naive=naive, data=data: naive(data),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        per_round: list[float] = []
        pairs: list[float] = []
        fastest = [float("inf"), float("inf")]
        for r in range(rounds):
            tc, tk, ratios, mc, mk = _measure_pair(fns["cython"], fns["crc_only"], 2 * seconds)
            times["cython"].append(tc)
            times["crc_only"].append(tk)
            per_round.append(statistics.median(ratios))
            pairs += ratios
            fastest = [min(fastest[0], mc), min(fastest[1], mk)]
            for k in ("python", "naive"):
                # the slow ones get fewer repetitions but the same number of rounds
                times[k].append(_measure(fns[k], seconds / 2))
            say(f"{wl}: round {r + 1}/{rounds}: " + ", ".join(f"{k} {n / times[k][-1] / 1e6:.3g} M/s" for k in fns))
        rate = {k: n / statistics.median(v) for k, v in times.items()}
        out: dict[str, Any] = {k: round(v, 1) for k, v in rate.items()}
        out["cython_vs_naive"] = round(rate["cython"] / rate["naive"], 2)
        out["cython_vs_python"] = round(rate["cython"] / rate["python"], 2)
        # the median over every (cython call, crc_only call) pair: both calls of a pair
        # see the same load, and the median drops the pairs a burst hit on one side only
        out["cython_vs_crc_only"] = round(statistics.median(pairs), 3)
        out["cython_vs_crc_only_rounds"] = [round(x, 3) for x in per_round]
        out["cython_vs_crc_only_fastest"] = round(fastest[1] / fastest[0], 3)  # fastest call of each
        out["pairs"] = len(pairs)
        out["cython_gbps"] = round(rate["cython"] * plen / 1e9, 3)
        out["crc_only_gbps"] = round(rate["crc_only"] * plen / 1e9, 3)
        out["naive_gbps"] = round(rate["naive"] * plen / 1e9, 4)
        out["packet_bytes"] = round(plen, 1)
        out["packets_per_container"] = n
        out["rounds"] = rounds
        if pname is None:
            res = cp.parse(data)
            out["mix"] = {t.name: len(t) for t in res.tables.values()}
        result[wl] = out
    result["meta"] = {
        "field_decoder": level,
        **_parse_c.build_info(),
        "units": "packets/s (median of rounds); *_gbps in 1e9 bytes/s",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "seconds_per_round": seconds,
    }
    return result


def _table(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [f"decoder {m['field_decoder']} (best on this CPU: {m['cpu_level']}), CPU {m['cpu_model']}",
             f"built by {m['compiler']} with {m['build_flags']}", ""]
    for wl in WORKLOADS:
        r = res[wl]
        lines.append(f"{wl}: {r['packets_per_container']} x {r['packet_bytes']:g}-byte packets per container"
                     f"{' (average)' if wl == 'mixed' else ''}, median of {r['rounds']} rounds")
        lines.append(f"  {'implementation':<12} {'packets/s':>14} {'GB/s':>8} {'x naive':>9}")
        for k in IMPLS:
            lines.append(f"  {k:<12} {r[k]:>14,.0f} {r[k] * r['packet_bytes'] / 1e9:>8.3f} {r[k] / r['naive']:>9.2f}")
        lines.append(f"  cython / crc_only = {r['cython_vs_crc_only']:.3f}   cython / python = {r['cython_vs_python']:.1f}")
        if "mix" in r:
            lines.append("  mix: " + ", ".join(f"{k} {v}" for k, v in r["mix"].items()))
        lines.append("")
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    def progress(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    packets = {}
    if args.hk_packets:
        packets["housekeeping"] = args.hk_packets
    if args.seismic_packets:
        packets["seismic"] = args.seismic_packets
    if args.mixed_packets:
        packets["mixed"] = args.mixed_packets
    if args.decoder != "best":
        from ground.parse import _parse_c

        try:
            _parse_c.set_simd(args.decoder)
        except ValueError as e:
            print(f"lunabase bench parse: {e}", file=sys.stderr)
            return 2
    res = run(rounds=args.rounds, seconds=args.seconds, packets=packets, progress=progress)
    if args.json:
        print(json.dumps(res))
    else:
        print(_table(res))
    return 0


def register(bench_subparsers: Any) -> None:
    """Add `parse` to the `lunabase bench` subcommands."""
    p = bench_subparsers.add_parser(
        "parse",
        help="parser packets/s: Cython vs pure Python vs naive vs CRC-only",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--rounds", type=int, default=5, help="rounds per implementation (median reported; default 5)")
    p.add_argument("--seconds", type=float, default=0.25, help="minimum seconds per round (default 0.25)")
    p.add_argument("--hk-packets", type=int, default=0, help="HK packets per container (default 10000)")
    p.add_argument("--seismic-packets", type=int, default=0, help="seismic packets per container (default 1000)")
    p.add_argument("--mixed-packets", type=int, default=0, help="packets in the mixed workload (default 10000)")
    p.add_argument("--decoder", choices=("best", "avx512", "avx2", "ssse3", "scalar"), default="best",
                   help="the Cython parser's decoder (default: the best this CPU has; meta.field_decoder "
                        "in the JSON says which ran)")
    p.set_defaults(func=_cmd)

"""Fuzz: >= 100,000 random and mutated inputs through the Cython parser, batch and
stream, without a crash and with the byte-accounting invariants holding."""

from __future__ import annotations

import random
import time

import numpy as np
from parse_helpers import make_packet

import ground.parse as gp
from wire.dictionary import load

D = load()
N_INPUTS = 100_000


def _check(res, n, base=0):
    acc = int(res.length.sum())
    rej = 0
    last = base
    spans = sorted([(int(o), int(o) + int(ln)) for o, ln in zip(res.offset, res.length, strict=True)]
                   + [(r.start, r.end) for r in res.rejected])
    for s, e in spans:
        assert s == last and e > s
        last = e
    for r in res.rejected:
        rej += r.end - r.start
    assert acc + rej == res.consumed and last == base + res.consumed
    assert res.consumed <= n
    assert res.count == len(res.apid) == sum(len(t) for t in res.tables.values())


def test_fuzz_cython_parser_100k_inputs():
    rnd = random.Random(20261123)
    apids = [p.apid for p in D.packets]
    pool = [make_packet(a, rnd.getrandbits(14), rnd.randbytes(D.packet(a).length - 14)) for a in apids for _ in range(8)]
    parser = gp.CParser()
    t0 = time.perf_counter()
    done = 0
    stream = gp.CStreamParser(parser=parser)
    fed = 0
    while done < N_INPUTS:
        kind = rnd.random()
        if kind < 0.3:
            data = rnd.randbytes(rnd.randint(0, 200))
        else:
            buf = bytearray(b"".join(rnd.choice(pool) for _ in range(rnd.randint(0, 6))))
            for _ in range(rnd.randint(0, 5)):
                op = rnd.randrange(5)
                if op == 0 and buf:
                    buf[rnd.randrange(len(buf))] ^= 1 << rnd.randrange(8)
                elif op == 1 and buf:
                    del buf[rnd.randrange(len(buf)):]
                elif op == 2:
                    i = rnd.randint(0, len(buf))
                    buf[i:i] = rnd.randbytes(rnd.randint(1, 9))
                elif op == 3 and buf:
                    i = rnd.randrange(len(buf))
                    buf[i] = rnd.choice((0x00, 0x08, 0xFF, 0x1F))
                else:
                    buf[:0] = rnd.randbytes(rnd.randint(0, 30))
            data = bytes(buf)
        res = parser.parse(data)
        _check(res, len(data))
        assert res.consumed == len(data)
        if not np.all(np.isin(res.apid, apids)):
            raise AssertionError("accepted an APID the dictionary does not know")
        # the same bytes through the stream parser, in two pieces
        k = rnd.randint(0, len(data))
        for piece in (data[:k], data[k:]):
            before = stream.position
            r = stream.feed(piece)
            _check(r, stream.pending + r.consumed, before)
            fed += len(piece)
            assert stream.position + stream.pending == fed
        done += 1
    before = stream.position
    _check(stream.flush(), 0 + (fed - before), before)
    assert stream.pending == 0
    elapsed = time.perf_counter() - t0
    print(f"{done} fuzz inputs in {elapsed:.1f} s")

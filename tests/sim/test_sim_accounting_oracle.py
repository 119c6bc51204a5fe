"""The simulator's accounting decodes with the wire contract alone (sim/accounting.py
``decode``): an oracle independent of the ground's parser, checked against it here."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ground.parse import PyParser
from sim.accounting import decode
from wire import defs
from wire.dictionary import load

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
TM = [bytes.fromhex(p.read_text().split()[0]) for p in sorted(VECTORS.glob("*.hex")) if p.stem != "tc_set_rate"]


def test_vectors_decode_like_the_ground() -> None:
    d = load()
    payload = b"".join(TM)
    packets, rejected = decode(payload, d)
    res = PyParser(d).parse(payload)
    assert rejected == [] and not res.rejected
    assert [(p.apid, p.seq, p.ticks) for p in packets] == list(zip(res.apid.tolist(), res.seq.tolist(),
                                                                    res.ticks.tolist(), strict=True))
    hk = next(p for p in packets if p.apid == defs.APID_HK)
    table = res.tables[1]
    assert hk.values == pytest.approx(dict(zip(table.columns, table.values[0].tolist(), strict=True)))


@pytest.mark.parametrize("seed", range(20))
def test_corrupted_containers_agree_with_the_ground(seed: int) -> None:
    rng = random.Random(seed)
    d = load()
    buf = bytearray(b"".join(rng.choice(TM) for _ in range(12)))
    for _ in range(rng.randrange(1, 6)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.5:  # a cut: bytes lost in the middle of the message
        i = rng.randrange(len(buf))
        del buf[i:i + rng.randrange(1, 40)]
    packets, rejected = decode(bytes(buf), d)
    res = PyParser(d).parse(bytes(buf))
    assert [(p.apid, p.seq) for p in packets] == list(zip(res.apid.tolist(), res.seq.tolist(), strict=True))
    assert sum(b - a for a, b in rejected) == sum(r.end - r.start for r in res.rejected)

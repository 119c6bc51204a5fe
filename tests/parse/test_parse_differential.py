"""Cython vs pure Python on valid, mutated and chunked inputs: identical results."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parse_compare import assert_invariants, assert_same
from parse_helpers import make_packet

import ground.parse as gp
from wire import ccsds
from wire.dictionary import load

D = load()
APIDS = [p.apid for p in D.packets]

@pytest.fixture(autouse=True, params=["avx512", "avx2", "ssse3", "scalar"])
def decoder(request):
    """Run every differential test with each field decoder this CPU supports."""
    from ground.parse import _parse_c

    if request.param not in _parse_c.SIMD_LEVELS:
        pytest.skip(f"this CPU cannot run the {request.param} decoder")
    prev = _parse_c.set_simd(request.param)
    yield request.param
    _parse_c.set_simd(prev)


settings.register_profile("lunabase", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lunabase")


@st.composite
def packets(draw, apid=None):
    a = draw(st.sampled_from(APIDS)) if apid is None else apid
    p = D.packet(a)
    payload = draw(st.binary(min_size=p.length - 14, max_size=p.length - 14))
    return make_packet(a, draw(st.integers(0, ccsds.SEQ_MASK)), payload, draw(st.integers(0, 2**32 - 1)),
                       draw(st.integers(0, 0xFFFF)))


@st.composite
def odd_packets(draw):
    # well-formed CRC but not acceptable: unknown APID, wrong length, TC type
    kind = draw(st.sampled_from(["unknown", "length", "tc"]))
    if kind == "unknown":
        apid = draw(st.integers(0, 0x7FF).filter(lambda a: a not in APIDS))
        return make_packet(apid, 0, draw(st.binary(max_size=60)))
    apid = draw(st.sampled_from(APIDS))
    n = D.packet(apid).length - 14
    if kind == "length":
        return make_packet(apid, 0, draw(st.binary(max_size=80).filter(lambda b: len(b) != n)))
    return make_packet(apid, 0, draw(st.binary(min_size=n, max_size=n)), ptype=1)


containers = st.lists(st.one_of(packets(), packets(), odd_packets()), max_size=25).map(b"".join)


@st.composite
def mutated(draw):
    data = bytearray(draw(containers))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "prefix", "suffix", "splice"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "prefix":
            data[:0] = draw(st.binary(min_size=1, max_size=40))
        elif op == "suffix":
            data += draw(st.binary(min_size=1, max_size=40))
        elif op == "splice" and len(data) > 8:
            # a header-shaped fragment of a real packet in the middle
            frag = draw(packets())[: draw(st.integers(1, 20))]
            i = draw(st.integers(0, len(data)))
            data[i:i] = frag
    return bytes(data)


@given(containers)
@settings(max_examples=300)
def test_valid_containers_identical(data):
    a, b = gp.CParser().parse(data), gp.PyParser().parse(data)
    assert_same(a, b)
    assert_invariants(a, len(data))


@given(mutated())
@settings(max_examples=600)
def test_mutated_containers_identical(data):
    a, b = gp.CParser().parse(data), gp.PyParser().parse(data)
    assert_same(a, b)
    assert_invariants(a, len(data))


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_random_bytes_identical(data):
    assert_same(gp.CParser().parse(data), gp.PyParser().parse(data))


def _stream(cls_parser, cls_stream, data, cuts):
    sp = cls_stream(parser=cls_parser())
    out = []
    prev = 0
    for c in cuts + [len(data)]:
        before = sp.position
        r = sp.feed(data[prev:c])
        # what this feed settled tiles [before, before + consumed) exactly
        assert_invariants(r, r.consumed, 0, before)
        assert sp.position == before + r.consumed
        out.append(r)
        prev = c
    before = sp.position
    r = sp.flush()
    assert_invariants(r, r.consumed, 0, before)
    out.append(r)
    assert sp.pending == 0 and sp.position == len(data)
    return out


@given(mutated(), st.lists(st.integers(0, 10_000), max_size=12), st.randoms(use_true_random=False))
@settings(max_examples=300)
def test_stream_random_chunking_identical(data, cuts, rnd):
    cuts = sorted(c % (len(data) + 1) for c in cuts)
    a = _stream(gp.CParser, gp.CStreamParser, data, cuts)
    b = _stream(gp.PyParser, gp.PyStreamParser, data, cuts)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert_same(x, y)
    # every byte is either in an accepted packet or in a rejected range, exactly once
    total = sum(int(r.length.sum()) + sum(q.end - q.start for q in r.rejected) for r in a)
    assert total == len(data)


def test_stream_on_valid_packets_accepts_everything_whatever_the_chunks():
    rnd = random.Random(3)
    data = b"".join(make_packet(a, i, rnd.randbytes(D.packet(a).length - 14)) for i, a in
                    enumerate(rnd.choice(APIDS) for _ in range(300)))
    for cls_p, cls_s in ((gp.CParser, gp.CStreamParser), (gp.PyParser, gp.PyStreamParser)):
        sp = cls_s(parser=cls_p())
        n = 0
        i = 0
        while i < len(data):
            k = rnd.randint(1, 700)
            r = sp.feed(data[i : i + k])
            assert r.rejected == []
            n += r.count
            i += k
        assert n == 300 and sp.flush().count == 0 and sp.pending == 0


def test_mixed_workload_identical():
    """What a real-firmware node journals (the bench's mixed workload: HK, POWER, THERMAL,
    RADIATION, EVENT, SEISMIC interleaved at the default rates), clean, after garbage (the
    outputs' census stops there and they grow by doubling) and cut into stream chunks."""
    from lunabase.bench.parse import make_mixed, node_schedule

    data = make_mixed(700)
    a, b = gp.CParser().parse(data), gp.PyParser().parse(data)
    assert_same(a, b)
    assert a.count == 700 and a.rejected == []
    want: dict[str, int] = {}
    for _t, name in node_schedule(700):
        want[name] = want.get(name, 0) + 1
    assert {t.name: len(t) for t in a.tables.values()} == want
    assert set(want) == {"HK", "POWER", "THERMAL", "RADIATION", "EVENT", "SEISMIC"}
    rnd = random.Random(5)
    for garbage_at in (0, 1, len(data) // 3, len(data) - 100):
        bad = bytearray(data)
        bad[garbage_at:garbage_at] = rnd.randbytes(37)
        a, b = gp.CParser().parse(bytes(bad)), gp.PyParser().parse(bytes(bad))
        assert_same(a, b)
        assert_invariants(a, len(bad))
    cuts = sorted(rnd.randrange(len(data)) for _ in range(9))
    for x, y in zip(_stream(gp.CParser, gp.CStreamParser, data, cuts),
                    _stream(gp.PyParser, gp.PyStreamParser, data, cuts), strict=True):
        assert_same(x, y)


def test_outputs_grow_past_the_census():
    """The census walks the first 32 kB: an APID that only appears after it, and more
    packets than extrapolated, make the outputs grow (by doubling) mid-scan."""
    from lunabase.bench.parse import make_container

    data = make_container("HK", 600) + make_container("POWER", 3000) + make_container("HK", 2000)
    a, b = gp.CParser().parse(data), gp.PyParser().parse(data)
    assert_same(a, b)
    assert a.count == 5600 and len(a.tables[2]) == 3000
    data = b"\x01" * 7 + data  # garbage first: the census finds nothing
    assert_same(gp.CParser().parse(data), gp.PyParser().parse(data))


def test_long_packet_four_chain_crc_catches_every_flip():
    """A SEISMIC batch between other packets has its CRC computed as four chains over its
    quarters, combined by shifting: a bit flipped anywhere in it (each quarter, the tail,
    the trailer) is a bad CRC, exactly as the pure twin finds."""
    from lunabase.bench.parse import make_container

    hk, seis = make_container("HK", 1), make_container("SEISMIC", 1)
    clean = hk + seis + hk
    assert gp.CParser().parse(clean).count == 3
    for pos in (0, 5, 12, 150, 151, 152, 153, 303, 304, 455, 456, 457, 460, 600, 613, 614, 615):
        for bit in (0, 7):
            data = bytearray(clean)
            data[len(hk) + pos] ^= 1 << bit
            a, b = gp.CParser().parse(bytes(data)), gp.PyParser().parse(bytes(data))
            assert_same(a, b)
            assert a.count == 2 and a.reasons  # the two HK packets, the batch rejected

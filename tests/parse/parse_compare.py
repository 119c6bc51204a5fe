"""Exact comparison of two ParseResults (every array, table, rejected range, consumed)."""

from __future__ import annotations

import numpy as np


def assert_same(a, b) -> None:
    assert a.count == b.count, (a.count, b.count)
    assert a.consumed == b.consumed, (a.consumed, b.consumed)
    for f in ("apid", "seq", "ticks", "offset", "length"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype, (f, x.dtype, y.dtype)
        assert x.shape == y.shape == (a.count,), f
        assert np.array_equal(x, y), f
    assert a.rejected == b.rejected
    assert list(a.tables) == list(b.tables)
    for k, ta in a.tables.items():
        tb = b.tables[k]
        assert (ta.apid, ta.name, ta.columns, ta.sample_scale) == (tb.apid, tb.name, tb.columns, tb.sample_scale)
        assert ta.rows.dtype == tb.rows.dtype and np.array_equal(ta.rows, tb.rows)
        assert ta.values.dtype == tb.values.dtype == np.float64
        assert ta.values.shape == tb.values.shape
        # bit-exact: same float64 arithmetic raw * scale + add
        assert np.array_equal(ta.values.view(np.int64), tb.values.view(np.int64))
        assert (ta.raw_samples is None) == (tb.raw_samples is None)
        if ta.raw_samples is not None:
            assert ta.raw_samples.dtype == tb.raw_samples.dtype == np.int16
            assert np.array_equal(ta.raw_samples, tb.raw_samples)
        assert ta.texts == tb.texts


def assert_invariants(res, n: int, pending: int = 0, base: int = 0) -> None:
    """accepted + rejected + pending bytes == input; ranges ordered, disjoint, in bounds
    and tiling [base, base + consumed) exactly."""
    acc = int(res.length.sum())
    rej = sum(r.end - r.start for r in res.rejected)
    assert acc + rej + pending == n, (acc, rej, pending, n)
    spans = sorted([(int(o), int(o) + int(ln)) for o, ln in zip(res.offset, res.length, strict=True)]
                   + [(r.start, r.end) for r in res.rejected])
    assert res.consumed + pending == n
    last = base
    for s, e in spans:
        assert s < e
        assert s == last, "ranges must tile the consumed bytes without gaps or overlap"
        last = e
    assert last == base + res.consumed
    assert [r.start for r in res.rejected] == sorted(r.start for r in res.rejected)

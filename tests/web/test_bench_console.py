"""`lunabase bench console` runs end to end and prints its figures (a smoke run, not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lunabase import ROOT

pytestmark = pytest.mark.browser


def test_bench_console_prints_delay_and_cpu() -> None:
    r = subprocess.run([sys.executable, "-m", "lunabase.cli", "bench", "console", "--nodes", "3", "--seconds", "4",
                        "--warmup", "1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["nodes"] == 3 and res["subscriptions"] == 12
    assert res["hk_matched"] >= 6  # 3 nodes x 4 s of 1 Hz HK, most of them matched commit -> receipt
    d = res["delay_ms"]
    assert 0 < d["p50"] <= d["p99"] <= d["max"]
    assert res["browser_cpu_pct"] > 0 and res["live_samples_delivered"] > 0
    assert res["resyncs"] == 0

"""`lunabase bench parse` runs and prints the documented JSON (figures are not asserted:
the machine is shared and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys

from lunabase.bench import parse as bench


def test_bench_parse_json_smoke():
    p = subprocess.run(
        [sys.executable, "-m", "lunabase.cli", "bench", "parse", "--json", "--rounds", "1", "--seconds", "0.01",
         "--hk-packets", "200", "--seismic-packets", "20", "--mixed-packets", "100"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    for wl in ("housekeeping", "seismic", "mixed"):
        for k in ("cython", "python", "naive", "crc_only", "cython_vs_naive", "cython_vs_crc_only", "cython_gbps"):
            assert isinstance(res[wl][k], (int, float)) and res[wl][k] > 0, (wl, k)
    assert res["housekeeping"]["packet_bytes"] == 56 and res["seismic"]["packet_bytes"] == 616
    assert res["mixed"]["mix"]["HK"] > 0 and res["mixed"]["mix"]["SEISMIC"] > 0
    for k in ("compiler", "build_flags", "cpu_model", "field_decoder"):
        assert res["meta"][k], k
    assert "round 1/1" in p.stderr  # progress goes to stderr


def test_naive_baseline_agrees_on_what_it_accepts():
    data = bench.make_container("HK", 50)
    naive = bench.naive_parser()
    assert naive(data) == 50
    bad = bytearray(data)
    bad[100] ^= 0xFF  # inside packet 1
    assert naive(bytes(bad)) == 49


def test_bench_help_lists_subcommands():
    p = subprocess.run([sys.executable, "-m", "lunabase.cli", "bench", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "parse" in p.stdout


def test_bench_parse_decoder_option_is_honoured():
    p = subprocess.run(
        [sys.executable, "-m", "lunabase.cli", "bench", "parse", "--json", "--rounds", "1", "--seconds", "0.01",
         "--hk-packets", "100", "--seismic-packets", "10", "--mixed-packets", "50", "--decoder", "scalar"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["meta"]["field_decoder"] == "scalar"
    assert len(res["housekeeping"]["cython_vs_crc_only_rounds"]) == 1


def test_mixed_workload_uses_the_firmware_default_rates():
    """The mixed workload's periods are the firmware's own defaults (read from its source:
    the firmware is MicroPython and not importable here)."""
    import ast
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "firmware" / "lunanode" / "config.py").read_text()
    tree = ast.parse(src)
    defaults = next(ast.literal_eval(n.value) for n in tree.body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_DEFAULTS")
    r = defaults["rates"]
    assert bench.NODE_PERIODS_S == {
        "HK": r["hk_ms"] / 1000, "POWER": r["power_ms"] / 1000, "THERMAL": r["thermal_ms"] / 1000,
        "RADIATION": r["radiation_ms"] / 1000, "SEISMIC": 100 / r["seismic_hz"],
    }
    sched = bench.node_schedule(300)
    assert [t for t, _ in sched] == sorted(t for t, _ in sched)
    data = bench.make_mixed(300)
    assert bench.naive_parser()(data) == 300

"""Replay of the raw archive (pipeline, sinks, broker) and CSV/Parquet export."""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ground.archive import Archive, open_archive, unix_to_ticks
from ground.export import export_packet, export_parameters
from ground.ingest import IngestWorker, Pipeline
from ground.ingest.testing import hk, packet
from ground.replay import Replayer
from sim.mosquitto import Mosquitto
from wire import defs

T0 = 1_780_000_000.0


def filled(tmp_path: Path) -> Archive:
    a = open_archive(f"sqlite:///{tmp_path}/src.db")
    p = Pipeline(a)
    for k in range(5):  # 5 batches 0.05 s apart in reception time, 2 nodes
        batch = [(f"lunabase/moon/n0{n}/tm",
                  b"".join(hk(k * 4 + i, unix_to_ticks(T0 + k * 4 + i), free_heap=1000 * n + k * 4 + i)
                           for i in range(4)), T0 + 0.05 * k) for n in (1, 2)]
        p.process(batch)
    p.process([("lunabase/moon/n01/tm", packet(defs.APID_SEISMIC, 0, unix_to_ticks(T0), values={"rate": 50},
                                                samples=np.arange(300, dtype=">i2").tobytes()), T0 + 0.3)])
    return a


async def test_replay_into_pipeline_and_sinks(parser_cls, tmp_path: Path) -> None:
    src = filled(tmp_path)
    dst = open_archive(f"sqlite:///{tmp_path}/dst.db")
    t = time.monotonic()
    n = await Replayer(src, speed=1.0).to_pipeline(Pipeline(dst, parser=parser_cls(dst.dictionary)))
    assert time.monotonic() - t >= 0.25  # the 0.3 s of reception history, at 1x
    assert n == 41 and dst.count_raw() == 41
    assert list(dst.parameter("HK.free_heap", node="n02")["value"]) == list(
        src.parameter("HK.free_heap", node="n02")["value"])
    got = []

    class Sink:
        def on_packets(self, site, node, result, fresh, received):
            got.extend((node, int(s)) for s in result.seq)

    n2 = await Replayer(src, t0=T0 + 0.1, speed=None, node="n01").to_sinks([Sink()])
    assert n2 == len(got) == 13 and all(node == "n01" for node, _ in got)


async def test_replay_to_broker(parser_cls, broker: Mosquitto, tmp_path: Path) -> None:
    src = filled(tmp_path)
    dst = open_archive(f"sqlite:///{tmp_path}/dst2.db")
    w = IngestWorker(dst, broker.host, broker.port, client_id="ing-replay", parser=parser_cls(dst.dictionary))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 10)
    n = await Replayer(src, speed=10.0).to_broker(broker.host, broker.port)
    deadline = time.monotonic() + 20
    while dst.count_raw() < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    w.stop()
    await task
    assert n == 41 and dst.count_raw() == 41
    assert w.stats()["totals"]["gaps"] == 0


def test_export_csv_and_parquet(tmp_path: Path) -> None:
    a = filled(tmp_path)
    assert export_packet(a, "HK", tmp_path / "hk.csv", node="n01") == 20
    rows = list(csv.DictReader((tmp_path / "hk.csv").open()))
    assert rows[3]["node"] == "n01" and float(rows[3]["free_heap"]) == 1003.0
    assert float(rows[3]["time"]) == T0 + 3
    assert export_packet(a, "SEISMIC", tmp_path / "s.parquet") == 1
    t = pq.read_table(tmp_path / "s.parquet").to_pydict()
    assert t["rate"] == [50.0] and t["samples_y"][0][:2] == [1, 4]
    n = export_parameters(a, ["HK.free_heap", "rate"], tmp_path / "p.parquet", t0=T0, t1=T0 + 2)
    t = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert n == 5 and set(t["parameter"]) == {"HK.free_heap", "SEISMIC.rate"}
    assert t["time"] == sorted(t["time"])


def test_cli_broker_config_export_archive(tmp_path: Path, capsys) -> None:
    from lunabase.cli import main
    from wire.inventory import Inventory

    Inventory.generate("moon", ["n01", "n02"]).save(tmp_path / "base.toml")
    assert main(["broker-config", "--inventory", str(tmp_path / "base.toml"), "--out", str(tmp_path / "b"),
                 "--port", "18830"]) == 0
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    assert "max_queued_messages 0" in conf and "allow_anonymous false" in conf
    assert "topic write lunabase/moon/n02/tm" in (tmp_path / "b" / "acl").read_text()
    assert ((tmp_path / "b" / "passwd").stat().st_mode & 0o777) == 0o600
    filled(tmp_path).close()
    url = f"sqlite:///{tmp_path}/src.db"
    assert main(["export", "--archive", url, "--param", "HK.free_heap", "--node", "n02",
                 "--out", str(tmp_path / "x.csv")]) == 0
    assert len((tmp_path / "x.csv").read_text().splitlines()) == 21
    assert main(["archive", "info", "--archive", url]) == 0
    assert main(["archive", "rebuild", "--archive", url]) == 0
    assert "41 raw packets" in capsys.readouterr().out


def test_cli_refuses_a_missing_archive_and_bad_names(tmp_path: Path, capsys) -> None:
    from lunabase.cli import main

    missing = tmp_path / "typo" / "base.db"
    for argv in (["archive", "info"], ["archive", "rebuild"], ["export", "--packet", "HK", "--out", "x.csv"],
                 ["replay", "--speed", "max"]):
        assert main([*argv, "--archive", f"sqlite:///{missing}"]) == 1, argv
        err = capsys.readouterr().err
        assert "no such archive file" in err and "Traceback" not in err, err
    assert not missing.parent.exists()  # nothing created under the mistyped path
    # relative times as the examples write them parse (and reach the archive check)
    assert main(["replay", "--archive", f"sqlite:///{missing}", "--from=-1h", "--speed", "10x"]) == 1
    assert "no such archive file" in capsys.readouterr().err
    for bad in (["--speed", "fast"], ["--from", "yesterday"]):
        with pytest.raises(SystemExit):
            main(["replay", "--archive", f"sqlite:///{missing}", *bad])
        assert f"argument {bad[0]}: '{bad[1]}'" in capsys.readouterr().err
    assert main(["ground", "--inventory", str(tmp_path / "none.toml")]) == 1
    assert "no such inventory file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no packet or command 'NOSUCH'; known: HK"):
        main(["dict", "show", "NOSUCH"])
    assert main(["command", "n01", "PING", "--api", "http://127.0.0.1:1"]) == 1  # nothing listens on port 1
    assert capsys.readouterr().err.startswith("lunabase command: http://127.0.0.1:1: ")

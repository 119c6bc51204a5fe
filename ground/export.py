"""Export archived parameters to CSV or Parquet.

Two shapes:

* a packet type, wide: one row per packet, a column per field
  (``export_packet(archive, "HK", "hk.parquet")``); seismic sample blocks go to Parquet
  as a list column of int16 raw counts per axis, and are left out of CSV;
* chosen parameters, long: one row per sample, columns time, site, node, parameter,
  value (``export_parameters(archive, ["HK.free_heap", "POWER.battery_soc"], "p.csv")``).

The format follows the file suffix (.csv, .parquet) unless ``fmt`` is given.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ground.archive import Archive


def _fmt(path: Path, fmt: str | None) -> str:
    f = (fmt or path.suffix.lstrip(".")).lower()
    if f not in ("csv", "parquet"):
        raise ValueError(f"{path}: cannot tell the format (use a .csv or .parquet suffix, or fmt=)")
    return f


def _write(cols: dict[str, Any], path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
        return
    names = list(cols)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        cols_l = [c.tolist() if isinstance(c, np.ndarray) else c for c in cols.values()]
        for row in zip(*cols_l, strict=True):
            w.writerow(row)


def export_packet(archive: Archive, packet: int | str, path: str | Path, node: str | None = None,
                  t0: float | None = None, t1: float | None = None, site: str | None = None,
                  fmt: str | None = None) -> int:
    """Write one packet type's decoded rows; returns rows written."""
    path = Path(path)
    f = _fmt(path, fmt)
    t = archive.table(packet, node=node, t0=t0, t1=t1, site=site)
    cols: dict[str, Any] = {"time": t["time"], "site": t["site"], "node": t["node"], "seq": t["seq"],
                            "received": t["received"]}
    spec = archive.spec(packet)
    for c in spec.numeric + spec.texts:
        cols[c] = t[c]
    if spec.samples and f == "parquet":
        s = t["samples"]
        p = archive.dictionary.packet(spec.apid)
        assert p.samples is not None
        for k, axis in enumerate(p.samples.axes):
            cols[f"samples_{axis}"] = [row.tolist() for row in s[:, :, k]]
    _write(cols, path, f)
    return len(t["time"])


def export_parameters(archive: Archive, names: Sequence[str], path: str | Path, node: str | None = None,
                      t0: float | None = None, t1: float | None = None, site: str | None = None,
                      fmt: str | None = None) -> int:
    """Write chosen parameters in long form (time, site, node, parameter, value); returns rows."""
    path = Path(path)
    f = _fmt(path, fmt)
    times: list[np.ndarray] = []
    sites: list[str] = []
    nodes: list[str] = []
    params: list[str] = []
    values: list[np.ndarray] = []
    for name in names:
        pk, fld = archive.resolve(name)
        r = archive.parameter(f"{pk}.{fld}", node=node, t0=t0, t1=t1, site=site)
        times.append(r["time"])
        values.append(np.asarray(r["value"], dtype=np.float64))
        sites += r["site"]
        nodes += r["node"]
        params += [f"{pk}.{fld}"] * len(r["time"])
    time_a = np.concatenate(times) if times else np.zeros(0)
    order = np.argsort(time_a, kind="stable")
    cols = {
        "time": time_a[order],
        "site": [sites[i] for i in order.tolist()],
        "node": [nodes[i] for i in order.tolist()],
        "parameter": [params[i] for i in order.tolist()],
        "value": (np.concatenate(values) if values else np.zeros(0))[order],
    }
    _write(cols, path, f)
    return len(order)

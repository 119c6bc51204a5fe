"""Imports flow one way (README, "Architecture"), for every package of the project:

    wire  <-  firmware, ground, sim  <-  hil  <-  lunabase

wire/ imports nothing of the project; the firmware only wire/ and itself; ground/ and
sim/ only wire/ (the simulator reaches the ground over MQTT alone, and decodes with the
wire contract, an oracle independent of the ground's parser); hil/ may use ground/ and
sim/; the ``lunabase`` command sits on top of everything.

Read from the source with ast, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"wire", "firmware", "lunanode", "ground", "sim", "hil", "lunabase"}

# top-level package -> the project packages it may import
ALLOWED = {
    "wire": {"wire"},
    "firmware": {"wire", "lunanode"},
    "ground": {"ground", "wire"},
    "sim": {"sim", "wire"},
    "hil": {"hil", "ground", "sim", "wire"},
    "lunabase": {"lunabase", "ground", "sim", "hil", "wire"},
}


def test_every_package_is_checked() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"firmware"}
    assert packages - {"tests"} == set(ALLOWED)


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    files = [p for p in (ROOT / package).rglob("*.py") if p.name != "build.py"]  # build.py runs on the host
    assert files
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in files for line, mod in _imports(p)
           if mod in PROJECT and mod not in ALLOWED[package]]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from sim.node import VirtualNode\n    import hil.board\n")
    assert _imports(p) == [(2, "sim"), (3, "hil")]

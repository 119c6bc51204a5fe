#!/usr/bin/env bash
# Set up everything the suite needs (scripts/setup.sh), then run it: unit, property and
# fuzz tests, firmware on the real MicroPython VM, real mosquitto brokers on loopback,
# PostgreSQL when reachable, the console headless, HIL against a virtual board.
# Before the tests, the static checks: ruff (rules in pyproject.toml) and basedpyright in
# standard mode over wire, ground, sim, hil and lunabase ([tool.basedpyright]); either
# failing fails the run.  Extra arguments go to pytest (e.g. scripts/test.sh -k parse).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p artifacts
echo "[test] ruff check ."
.venv/bin/ruff check .
echo "[test] basedpyright (wire ground sim hil lunabase)"
.venv/bin/basedpyright
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

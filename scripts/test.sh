#!/usr/bin/env bash
# Set up everything the suite needs (scripts/setup.sh), then run it: unit, property and
# fuzz tests, firmware on the real MicroPython VM, real mosquitto brokers on loopback,
# PostgreSQL when reachable, the console headless, HIL against a virtual board.
# Extra arguments go to pytest (e.g. scripts/test.sh -k parse).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p artifacts
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Prepare this checkout: a .venv with every Python dependency, the Cython parser built in
# place, the MicroPython stubs for pyright, and Debian's mosquitto broker.
# Idempotent and quick when nothing changed.  Used by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "python3 (3.11 or newer) is not installed: apt-get install python3 python3-venv"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "lunabase needs Python 3.11 or newer; $("$PY" --version) found. Set PYTHON=/path/to/python3.11"

# --- system packages: mosquitto (the real broker every MQTT test and the demo start) ---
find_mosquitto() { command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true; }
if [ -z "$(find_mosquitto)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's mosquitto (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
  else
    die "Debian's mosquitto broker is missing: run 'sudo apt-get install mosquitto' (or install mosquitto >= 2.0 and put it on PATH), then try again"
  fi
fi
[ -n "$(find_mosquitto)" ] || die "mosquitto is still not found after installing it"

# --- headless Chromium: the browser tests (web console: tests/web; trust: cross-site requests) ---
# ONE block for every part that drives a browser: Debian's chromium and its chromedriver
# (driven by selenium from PyPI, executable /usr/bin/chromium). Merge other needs in here.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium and chromium-driver for the browser tests (apt-get, ~500 MB)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  else
    say "WARNING: chromium/chromedriver are missing, so the browser tests will fail: run 'sudo apt-get install chromium chromium-driver'"
  fi
fi

# --- the web console: NASA Open MCT's prebuilt dist/ (npm, version pinned in ground/web/package-lock.json) ---
web=ground/web
if [ ! -f $web/node_modules/openmct/dist/openmct.js ] || ! cmp -s $web/package-lock.json $web/node_modules/.lunabase-lock.json; then
  if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's npm for the web console (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  if command -v npm >/dev/null; then
    say "installing NASA Open MCT for the web console (npm ci in $web)"
    (cd $web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
      || die "npm ci in $web failed (the web console needs the openmct package pinned in $web/package-lock.json)"
    cp $web/package-lock.json $web/node_modules/.lunabase-lock.json
  else
    say "WARNING: npm is missing, so the web console cannot be served: run 'sudo apt-get install npm', then this script again"
  fi
fi

# --- the virtual environment ---
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv 2>/dev/null || die "could not create a virtual environment: apt-get install python3-venv"
fi
VPY=.venv/bin/python
stamp=.venv/.lunabase-installed
want=$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies into .venv (first run takes a minute; log: .venv/pip.log)"
  pip_q() { "$VPY" -m pip install -q "$@" >>.venv/pip.log 2>&1 || { tail -40 .venv/pip.log >&2; die "pip install $* failed (log above)"; }; }
  : > .venv/pip.log
  pip_q --upgrade pip setuptools wheel cython numpy
  pip_q -e '.[dev]' --no-build-isolation
  # MicroPython stubs for pyright: one folder per port, they would clash in site-packages
  pip_q --upgrade --target .venv/stubs/esp32 micropython-esp32-stubs
  pip_q --upgrade --target .venv/stubs/rp2 micropython-rp2-stubs
  echo "$want" > "$stamp"
fi

# --- the Cython parser, built in place (fast when up to date) ---
"$VPY" setup.py -q build_ext --inplace -j 2 >/dev/null 2>.venv/build.log \
  || { cat .venv/build.log >&2; die "building the Cython parser failed (log above)"; }
"$VPY" -c 'import ground.parse as p; assert p.IMPLEMENTATION == "cython" or p.CParser is None' \
  || die "the Cython parser did not import"
say "ready: $("$VPY" -c 'import ground.parse as p; print("parser", p.IMPLEMENTATION)'), $("$(find_mosquitto)" -h 2>/dev/null | head -1), Open MCT $(node -p "require('./$web/node_modules/openmct/package.json').version" 2>/dev/null || echo missing)"

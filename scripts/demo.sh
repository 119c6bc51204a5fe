#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo: a simulated lunar base streaming to the
# ground segment, watched from the operator console.  Arguments go to `lunabase demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lunabase demo "$@"

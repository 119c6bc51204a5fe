"""lunabase: telemetry stack for lunar surface stations (the `lunabase` command lives in cli.py)."""

from pathlib import Path

__version__ = "0.1.0"

#: the source checkout (firmware/, scenarios and docs are read from here)
ROOT = Path(__file__).resolve().parents[1]

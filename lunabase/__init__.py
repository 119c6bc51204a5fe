"""lunabase: telemetry stack for lunar surface stations (the `lunabase` command lives in cli.py)."""

from sim import ROOT

__version__ = "0.1.0"

__all__ = ["ROOT", "__version__"]  # ROOT: the source checkout (defined in sim/, which runs the firmware)

"""The lunar simulator: a modelled environment, virtual nodes (the real firmware on the
MicroPython unix port), an Earth–Moon link emulator, fault injection and scenarios.

Public entry points: :class:`sim.runner.Scenario`, :class:`sim.runner.SimBase`,
:func:`sim.runner.run_scenario`.  Model, sources and formats: docs/sim.md.
"""

from pathlib import Path

#: the source checkout: the firmware (firmware/ + wire/, per firmware/MANIFEST) and the
#: scenarios are read from here; ``lunabase.ROOT`` and hil's flasher use the same one
ROOT = Path(__file__).resolve().parents[1]

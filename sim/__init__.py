"""The lunar simulator: a modelled environment, virtual nodes (the real firmware on the
MicroPython unix port), an Earth–Moon link emulator, fault injection and scenarios.

Public entry points: :class:`sim.runner.Scenario`, :class:`sim.runner.SimBase`,
:func:`sim.runner.run_scenario`.  Model, sources and formats: docs/sim.md.
"""

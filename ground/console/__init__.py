"""`lunabase console`: the operator console, a Textual client of the ground's client interface.

Layers (docs/console.md): ``render`` (pure Rich renderables) → ``widgets`` → ``screens``
→ ``app.ConsoleApp``; ``model.BaseModel`` holds what the console knows and ``feed.Feed``
is its only network path (through ``ground.client.GroundClient``).  It never decodes
packets or judges limits: values, limit states and alarms come from the ground.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: at run time they load lazily, below
    from ground.console.app import ConsoleApp
    from ground.console.cli import run_console

__all__ = ["ConsoleApp", "run_console"]


def __getattr__(name: str):  # lazy: `lunabase --help` must not import Textual
    if name == "ConsoleApp":
        from ground.console.app import ConsoleApp

        return ConsoleApp
    if name == "run_console":
        from ground.console.cli import run_console

        return run_console
    raise AttributeError(name)

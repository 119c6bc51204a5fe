"""``lunabase`` subcommands of the ground segment, contributed by its two halves.

``ground.cli_data`` (ingest, archive, broker config, replay, export) and ``ground.cli_ops``
(the ground service, commanding) each define ``register(sub)``; a half that is not
present in this checkout is skipped.
"""

from __future__ import annotations

import importlib
from typing import Any


def register(sub: Any) -> None:
    for name in ("ground.cli_data", "ground.cli_ops", "ground.auth.cli"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register(sub)

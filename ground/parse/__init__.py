"""Packet parsing for the ground: a Cython fast path and its pure-Python twin.

``Parser`` / ``StreamParser`` are the compiled classes when the extension is built and
``LUNABASE_PURE_PARSER`` is unset (or ``0``), else the pure-Python reference; both have
the same API, results and exceptions.  ``IMPLEMENTATION`` says which one is in use.

    >>> from ground.parse import Parser
    >>> res = Parser().parse(mqtt_payload)        # packets back to back
    >>> res.tables[1].column("free_heap")         # HK engineering values, one per packet
    >>> res.rejected                              # [Rejected(start, end, reason), ...]
"""

from __future__ import annotations

import os

from ground.parse import _parse_py
from ground.parse._common import (
    REASONS,
    ApidLayout,
    ParseResult,
    Rejected,
    Table,
    compile_layout,
)

PURE_ENV = "LUNABASE_PURE_PARSER"

PyParser = _parse_py.Parser
PyStreamParser = _parse_py.StreamParser

try:
    from ground.parse import _parse_c  # type: ignore[attr-defined]

    CParser = _parse_c.Parser
    CStreamParser = _parse_c.StreamParser
    CYTHON_ERROR: str | None = None
except ImportError as e:  # not built: say why rather than failing later
    CParser = CStreamParser = None  # type: ignore[assignment,misc]
    CYTHON_ERROR = str(e)

if CParser is not None and os.environ.get(PURE_ENV, "0") in ("", "0"):
    Parser = CParser
    StreamParser = CStreamParser
    IMPLEMENTATION = "cython"
else:
    Parser = PyParser  # type: ignore[misc]
    StreamParser = PyStreamParser  # type: ignore[misc]
    IMPLEMENTATION = "python"

__all__ = [
    "IMPLEMENTATION",
    "PURE_ENV",
    "REASONS",
    "ApidLayout",
    "ParseResult",
    "Parser",
    "Rejected",
    "StreamParser",
    "Table",
    "compile_layout",
]

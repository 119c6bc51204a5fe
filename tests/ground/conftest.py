"""Fixtures of the ground tests: both parser twins for the tests that parse.

``parser_cls`` is the Cython parser, then the pure-Python one (``ground.parse``'s two
twins, whatever ``LUNABASE_PURE_PARSER`` says), so the ingest and archive paths are
checked on both: ``Pipeline(archive, parser=parser_cls(archive.dictionary))``.
"""

from __future__ import annotations

from typing import Any

import pytest

from ground import parse as gp


@pytest.fixture(scope="module", params=["cython", "python"])
def parser_cls(request: pytest.FixtureRequest) -> Any:
    """The parser class of one twin (the compiled one must be built: scripts/setup.sh)."""
    if request.param == "cython":
        if gp.CParser is None:
            pytest.fail(f"the Cython parser is not built ({gp.CYTHON_ERROR}): run scripts/setup.sh")
        return gp.CParser
    return gp.PyParser

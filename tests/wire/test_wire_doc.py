"""docs/wire-format.md's worked example is what the code produces (not typed by hand)."""

from __future__ import annotations

import make_vectors as mv

from ground.parse import CParser, PyParser


def test_worked_example_is_current():
    text = mv.DOC.read_text()
    a = text.index(mv.DOC_BEGIN) + len(mv.DOC_BEGIN)
    b = text.index(mv.DOC_END)
    assert text[a:b].strip() == mv.doc_example().strip(), "run tests/vectors/make_vectors.py --doc"


def test_worked_example_packet_parses():
    text = mv.doc_example()
    block = text.split("```")[1].strip().splitlines()
    data = bytes.fromhex("".join(line[6:] for line in block))
    for P in (CParser, PyParser):
        r = P().parse(data)
        assert r.count == 1 and r.rejected == []
        t = r.tables[1]
        assert t.column("cpu_temp")[0] == 21.5 and t.column("clock_drift")[0] == -1.23
        assert r.seq[0] == 42 and r.ticks[0] == (836_222_400 << 16) | 0x8000

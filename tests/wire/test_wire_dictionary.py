"""The dictionary is the single source: derived files must not drift, and an
inconsistent dictionary is refused with a DictionaryError naming the fault."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wire import ccsds, codegen, defs
from wire.dictionary import DICTIONARY_PATH, DictionaryError, load, parse

ROOT = DICTIONARY_PATH.parents[1]
TEXT = DICTIONARY_PATH.read_text()


def test_codegen_check_passes():
    p = subprocess.run([sys.executable, "-m", "wire.codegen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_a_changed_dictionary_would_fail_the_check():
    # mutate a copy: change a field's type; the rendered defs differ from the committed file
    mutated = TEXT.replace('{ name = "boot_count", type = "u16"', '{ name = "boot_count", type = "u32"', 1)
    assert mutated != TEXT
    d = parse(mutated)
    text = codegen.render(d, ccsds.crc16(mutated.encode()))
    assert text != codegen.DEFS_PATH.read_text()
    assert "HK_FMT = '>IIBB" in text  # the derived struct format followed the dictionary
    # and a mere comment edit changes the recorded dictionary CRC: drift is caught too
    assert codegen.render(load(), ccsds.crc16((TEXT + "\n# x\n").encode())) != codegen.DEFS_PATH.read_text()


def test_defs_match_the_dictionary():
    d = load()
    for p in d.packets:
        n = codegen._ident(p.name)
        assert getattr(defs, f"APID_{n}") == p.apid
        assert getattr(defs, f"{n}_LEN") == p.length
        assert getattr(defs, f"{n}_FMT") == p.payload_format
    for c in d.commands:
        assert getattr(defs, f"OP_{codegen._ident(c.name)}") == c.opcode
    assert defs.TC_APID == d.tc_apid and defs.TM_MAX_LEN == d.max_length


def test_parser_layouts_come_from_the_dictionary():
    from ground.parse import CParser, PyParser, compile_layout

    lay = compile_layout()
    for P in (CParser, PyParser):
        assert P().layouts == lay
    assert {a: layout.length for a, layout in lay.items()} == {p.apid: p.length for p in load().packets}


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('{ name = "uptime", type = "u32"', '{ name = "uptime", type = "u33"', "unknown type"),
        ("apid = 0x002", "apid = 0x001", "share an APID"),
        ('yellow = [-30, 70], red = [-40, 85]', 'yellow = [-30, 90], red = [-40, 85]', "yellow range must lie inside"),
        ('yellow = [3.4, 4.22]', 'yellow = [4.22, 3.4]', "low <= high"),
        ('enum = "reset_cause"', 'enum = "no_such_enum"', "unknown enum"),
        ("apid = 0x007", "apid = 0x040", "reserved for telecommands"),
        ("opcode = 2\n", "opcode = 1\n", "share an opcode"),
        ('{ name = "boot_count", type = "u16"', '{ name = "uptime", type = "u16"', "defined twice"),
    ],
)
def test_inconsistent_dictionary_raises(old, new, message):
    assert old in TEXT, old
    with pytest.raises(DictionaryError, match=message):
        parse(TEXT.replace(old, new, 1))


def test_dictionary_error_is_a_value_error():
    assert issubclass(DictionaryError, ValueError)


def test_packet_too_long_for_tm_max_length():
    with pytest.raises(DictionaryError, match="exceeds tm_max_length"):
        parse(TEXT.replace("tm_max_length = 1024", "tm_max_length = 200", 1))

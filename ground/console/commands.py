"""Command arguments checked by the dictionary's own ``CommandDef`` (wire/dictionary.py).

The console gets the dictionary from the ground (``GET /api/dictionary``) and rebuilds
each command as a ``wire.dictionary.CommandDef``, so what it accepts is exactly what
``CommandDef.pack_args`` (the ground's check before signing) accepts; only the wording
of the reason is the console's.

    cd = command_def(dictionary_json["commands"][1])
    value, err = validate_arg(arg_json, "500")       # (500, None) or (None, "≥ 1")
    cd.pack_args(**args)                            # ValueError if the set is incomplete
"""

from __future__ import annotations

import struct
from typing import Any

from wire.dictionary import CommandDef, Field

__all__ = ["arg_field", "command_def", "validate_arg"]


def arg_field(arg: dict[str, Any]) -> Field:
    """A command argument of the dictionary view as the wire's ``Field``."""
    enum = arg.get("enum")
    return Field(name=str(arg.get("name", "arg")), type=str(arg.get("type", "u32")), offset=0,
                 unit=str(arg.get("unit") or ""),
                 enum={int(k): str(v) for k, v in enum.items()} if isinstance(enum, dict) and enum else None,
                 min=arg.get("min"), max=arg.get("max"))


def command_def(cmd: dict[str, Any]) -> CommandDef:
    """A command of the dictionary view (``GET /api/dictionary``) as the wire's ``CommandDef``."""
    args = []
    offset = 0
    for a in cmd.get("args", []):
        f = arg_field(a)
        args.append(Field(**{**f.__dict__, "offset": offset}))
        offset += f.size
    return CommandDef(opcode=int(cmd.get("opcode", 0)), name=str(cmd["name"]), description=str(cmd.get("description", "")),
                      args=tuple(args), hazardous=bool(cmd.get("hazardous")))


def _type_range(f: Field) -> tuple[int, int]:
    bits = 8 * struct.calcsize(">" + f.struct_code)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.type.startswith("i") else (0, (1 << bits) - 1)


def validate_arg(arg: dict[str, Any], text: str) -> tuple[Any, str | None]:
    """(value, None) when ``text`` is a value ``CommandDef.pack_args`` accepts for this
    argument, else (None, reason).  Enum arguments take a state name; integers may be hex."""
    f = arg_field(arg)
    if f.enum is not None:
        if text not in f.enum.values():
            return None, f"one of {', '.join(f.enum.values())}"
        v: Any = text
    else:
        try:
            v = int(text, 16) if text.lower().startswith(("0x", "-0x")) else int(text, 10)
        except ValueError:
            return None, "an integer"  # pack_args takes integers only (raw counts)
    try:
        CommandDef(0, "_", "", (f,), False).pack_args(**{f.name: v})
    except ValueError as e:
        if f.min is not None and v < f.min:
            return None, f"≥ {f.min:g}"
        if f.max is not None and v > f.max:
            return None, f"≤ {f.max:g}"
        lo, hi = _type_range(f)
        if not lo <= v <= hi:
            return None, f"{f.type}: {lo}..{hi}"
        return None, str(e)
    return v, None

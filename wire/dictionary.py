"""The telemetry dictionary, loaded from ``wire/dictionary.toml`` (CPython only).

Everything that needs to know a packet's layout, a field's calibration or limits, or a
command's arguments asks this module; the firmware gets the same facts through the
generated ``wire/defs.py`` (see ``wire.codegen``).
"""

from __future__ import annotations

import struct
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from wire import ccsds

DICTIONARY_PATH = Path(__file__).with_name("dictionary.toml")

_STRUCT_CODES = {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f"}


class DictionaryError(ValueError):
    """The dictionary file is inconsistent; the message names the entry and the fault."""


@dataclass(frozen=True)
class Field:
    """One payload field of a telemetry packet or one telecommand argument."""

    name: str
    type: str
    offset: int  # from the start of the packet (TM) or of the argument block (TC)
    unit: str = ""
    scale: float = 1.0
    add: float = 0.0
    enum: dict[int, str] | None = None
    yellow: tuple[float, float] | None = None
    red: tuple[float, float] | None = None
    persistence: int = 1
    description: str = ""
    min: float | None = None
    max: float | None = None

    @property
    def struct_code(self) -> str:
        if self.type.startswith("bytes:"):
            return self.type[6:] + "s"
        return _STRUCT_CODES[self.type]

    @property
    def size(self) -> int:
        return struct.calcsize(">" + self.struct_code)

    @property
    def is_numeric(self) -> bool:
        return not self.type.startswith("bytes:")

    def to_eng(self, raw: float) -> float:
        return raw * self.scale + self.add

    def to_raw(self, eng: float) -> int:
        return int(round((eng - self.add) / self.scale))


@dataclass(frozen=True)
class Samples:
    """A block of multi-axis samples at the end of a packet (seismic batches)."""

    count: int
    axes: tuple[str, ...]
    type: str
    offset: int
    unit: str = ""
    scale: float = 1.0

    @property
    def struct_code(self) -> str:
        return _STRUCT_CODES[self.type]

    @property
    def size(self) -> int:
        return self.count * len(self.axes) * struct.calcsize(">" + self.struct_code)


@dataclass(frozen=True)
class PacketDef:
    """One telemetry packet type: a fixed-length layout under one APID."""

    apid: int
    name: str
    description: str
    fields: tuple[Field, ...]
    samples: Samples | None
    length: int  # total bytes including header and CRC

    @property
    def payload_format(self) -> str:
        """struct format of the fixed fields (not the sample block), big-endian."""
        return ">" + "".join(f.struct_code for f in self.fields)

    @property
    def numeric_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.is_numeric)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"packet {self.name} has no field {name!r}")


@dataclass(frozen=True)
class CommandDef:
    """One telecommand: opcode, argument layout and whether it needs confirmation."""

    opcode: int
    name: str
    description: str
    args: tuple[Field, ...]
    hazardous: bool

    @property
    def args_format(self) -> str:
        return ">" + "".join(a.struct_code for a in self.args)

    @property
    def args_length(self) -> int:
        return struct.calcsize(self.args_format)

    def length(self, node_id: str) -> int:
        """Total bytes of this command addressed to node_id."""
        return ccsds.TC_OVERHEAD + len(node_id.encode()) + self.args_length

    def pack_args(self, **values: Any) -> bytes:
        """Validate and pack arguments given by name (enum names or raw ints accepted)."""
        missing = [a.name for a in self.args if a.name not in values]
        extra = sorted(set(values) - {a.name for a in self.args})
        if missing or extra:
            raise ValueError(f"{self.name}: missing arguments {missing}, unexpected {extra}")
        raw = []
        for a in self.args:
            v = values[a.name]
            if a.enum is not None:
                if isinstance(v, str):
                    names = {n: k for k, n in a.enum.items()}
                    if v not in names:
                        raise ValueError(f"{self.name}.{a.name}: {v!r} is not one of {sorted(names)}")
                    v = names[v]
                elif v not in a.enum:
                    raise ValueError(f"{self.name}.{a.name}: {v!r} is not one of {sorted(a.enum)}")
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{self.name}.{a.name}: expected an integer, got {v!r}")
            if (a.min is not None and v < a.min) or (a.max is not None and v > a.max):
                raise ValueError(f"{self.name}.{a.name}: {v} outside [{a.min}, {a.max}]")
            raw.append(v)
        try:
            return struct.pack(self.args_format, *raw)
        except struct.error as e:
            raise ValueError(f"{self.name}: {e}") from None

    def unpack_args(self, data: bytes) -> dict[str, int]:
        return dict(zip((a.name for a in self.args), struct.unpack(self.args_format, data), strict=True))


@dataclass(frozen=True)
class Dictionary:
    """The whole dictionary: packets by APID and name, commands by opcode and name."""

    meta: dict[str, Any]
    enums: dict[str, dict[int, str]]
    packets: tuple[PacketDef, ...]
    commands: tuple[CommandDef, ...]
    _by_apid: dict[int, PacketDef] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_apid.update({p.apid: p for p in self.packets})

    @property
    def tc_apid(self) -> int:
        return int(self.meta["tc_apid"])

    @property
    def max_length(self) -> int:
        return int(self.meta["tm_max_length"])

    def packet(self, key: int | str) -> PacketDef:
        if isinstance(key, int):
            try:
                return self._by_apid[key]
            except KeyError:
                raise KeyError(f"unknown APID {key:#05x}") from None
        for p in self.packets:
            if p.name == key:
                return p
        raise KeyError(f"unknown packet {key!r}")

    def command(self, key: int | str) -> CommandDef:
        for c in self.commands:
            if c.opcode == key or c.name == key:
                return c
        raise KeyError(f"unknown command {key!r}")

    def has_apid(self, apid: int) -> bool:
        return apid in self._by_apid


def _limit(v: Any, where: str) -> tuple[float, float] | None:
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2 and v[0] <= v[1]):
        raise DictionaryError(f"{where}: a limit is [low, high] with low <= high, got {v!r}")
    return (float(v[0]), float(v[1]))


def _field(d: dict[str, Any], offset: int, enums: dict[str, dict[int, str]], where: str) -> Field:
    t = d.get("type", "")
    if t not in _STRUCT_CODES and not (t.startswith("bytes:") and t[6:].isdigit()):
        raise DictionaryError(f"{where}.{d.get('name')}: unknown type {t!r}")
    enum = None
    if "enum" in d:
        if d["enum"] not in enums:
            raise DictionaryError(f"{where}.{d['name']}: unknown enum {d['enum']!r}")
        enum = enums[d["enum"]]
    y, r = _limit(d.get("yellow"), where), _limit(d.get("red"), where)
    if y and r and not (r[0] <= y[0] and y[1] <= r[1]):
        raise DictionaryError(f"{where}.{d['name']}: the yellow range must lie inside the red range")
    return Field(
        name=d["name"],
        type=t,
        offset=offset,
        unit=d.get("unit", ""),
        scale=float(d.get("scale", 1.0)),
        add=float(d.get("offset", 0.0)),
        enum=enum,
        yellow=y,
        red=r,
        persistence=int(d.get("persistence", 1)),
        description=d.get("description", ""),
        min=d.get("min"),
        max=d.get("max"),
    )


def _layout(items: list[dict[str, Any]], start: int, enums: dict[str, dict[int, str]], where: str) -> tuple[Field, ...]:
    out, off = [], start
    names: set[str] = set()
    for d in items:
        f = _field(d, off, enums, where)
        if f.name in names:
            raise DictionaryError(f"{where}: field {f.name!r} defined twice")
        names.add(f.name)
        out.append(f)
        off += f.size
    return tuple(out)


def parse(text: str) -> Dictionary:
    """Build a Dictionary from TOML text, checking it for consistency."""
    raw = tomllib.loads(text)
    meta = raw["meta"]
    enums = {name: {int(k): v for k, v in m.items()} for name, m in raw.get("enums", {}).items()}
    packets = []
    for p in raw.get("packet", []):
        where = f"packet {p.get('name')}"
        fields = _layout(p.get("fields", []), ccsds.HEADER_LEN, enums, where)
        end = fields[-1].offset + fields[-1].size if fields else ccsds.HEADER_LEN
        samples = None
        if "samples" in p:
            s = p["samples"]
            samples = Samples(
                count=int(s["count"]),
                axes=tuple(s["axes"]),
                type=s["type"],
                offset=end,
                unit=s.get("unit", ""),
                scale=float(s.get("scale", 1.0)),
            )
            end += samples.size
        pd = PacketDef(
            apid=int(p["apid"]),
            name=p["name"],
            description=p.get("description", ""),
            fields=fields,
            samples=samples,
            length=end + ccsds.CRC_LEN,
        )
        if not 0 < pd.apid <= ccsds.APID_MASK or pd.apid == meta["tc_apid"]:
            raise DictionaryError(f"{where}: APID {pd.apid:#x} out of range or reserved for telecommands")
        if pd.length > meta["tm_max_length"]:
            raise DictionaryError(f"{where}: {pd.length} bytes exceeds tm_max_length")
        packets.append(pd)
    if len({p.apid for p in packets}) != len(packets) or len({p.name for p in packets}) != len(packets):
        raise DictionaryError("two packets share an APID or a name")
    commands = []
    for c in raw.get("command", []):
        where = f"command {c.get('name')}"
        commands.append(
            CommandDef(
                opcode=int(c["opcode"]),
                name=c["name"],
                description=c.get("description", ""),
                args=_layout(c.get("args", []), 0, enums, where),
                hazardous=bool(c.get("hazardous", False)),
            )
        )
    if len({c.opcode for c in commands}) != len(commands):
        raise DictionaryError("two commands share an opcode")
    return Dictionary(meta=meta, enums=enums, packets=tuple(packets), commands=tuple(commands))


@cache
def load(path: str | Path = DICTIONARY_PATH) -> Dictionary:
    """The dictionary at ``path`` (default: the project's), parsed once per process."""
    return parse(Path(path).read_text())

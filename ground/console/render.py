"""Pure renderables for the console: no I/O, no widgets, only data in and Rich text out.

Everything here is a function or a small class that turns plain values (numbers, lists,
dicts from the ground's client interface) into Rich ``Text``/``Table`` objects, so it can
be unit-tested without a terminal and reused by any widget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ground.client_types import PacketRow

LIMIT_STYLES: dict[str, str] = {
    "ok": "green",
    "yellow": "bold black on yellow",
    "red": "bold white on red",
    "stale": "dim",
}
STATE_STYLES: dict[str, str] = {
    "ONLINE": "bold green",
    "ASLEEP": "bold cyan",
    "STALE": "bold black on yellow",
    "LOST": "bold white on red",
    "UNKNOWN": "dim",
}
SEVERITY_STYLES: dict[str, str] = {
    "INFO": "cyan",
    "WARNING": "bold black on yellow",
    "YELLOW": "bold black on yellow",
    "ERROR": "bold white on dark_orange3",
    "RED": "bold white on red",
    "CRITICAL": "bold white on red",
}
SEVERITY_RANK: dict[str, int] = {"CRITICAL": 0, "RED": 0, "ERROR": 1, "WARNING": 2, "YELLOW": 2, "INFO": 3}
STAGE_STYLES: dict[str, str] = {
    "AWAITING_APPROVAL": "bold black on magenta",
    "APPROVED": "magenta",
    "DENIED": "bold white on red",
    "QUEUED": "dim",
    "HELD": "yellow",
    "SENT": "cyan",
    "ACCEPTED": "bold cyan",
    "EXECUTED": "bold green",
    "REJECTED": "bold white on red",
    "FAILED": "bold white on red",
    "TIMED_OUT": "bold black on yellow",
    "EXPIRED": "bold black on yellow",
}
_BLOCKS = " ▁▂▃▄▅▆▇█"


def fmt_number(value: Any, digits: int = 4) -> str:
    """A compact engineering number: 12.35, 4.1e+05, 1,234; text passes through."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        a = abs(value)
        if a == 0:
            return "0"
        if a >= 1e6 or a < 1e-3:
            return f"{value:.{digits - 1}e}"
        if value.is_integer() and a < 1e6:
            return str(int(value))
        if a >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}g}"
    return str(value)


def limit_cell(value: Any, limit: str | None = "ok", unit: str = "") -> Text:
    """A value coloured by its limit state (ok / yellow / red / stale); the unit stays plain."""
    style = LIMIT_STYLES.get((limit or "ok").lower(), "")
    t = Text(fmt_number(value), style=style)
    if unit:
        t.append(" " + unit, style="dim")
    return t


def _epoch(t: Any) -> float | None:
    """Seconds since the Unix epoch from a number or an ISO-8601 string (None if unknown)."""
    if t is None or t == "" or t == 0:
        return None
    if isinstance(t, (int, float)):
        return float(t)
    try:
        from datetime import datetime

        return datetime.fromisoformat(str(t).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def fmt_age(t: Any, now: float | None = None) -> str:
    """How long ago: '3s', '4m12s', '2h05m', '3d04h' ('—' when unknown)."""
    e = _epoch(t)
    if e is None:
        return "—"
    d = (now if now is not None else time.time()) - e
    return fmt_duration(d) + (" ago" if d >= 0 else " ahead")


def fmt_duration(d: float) -> str:
    """A short duration: 3s, 4m12s, 2h05m, 3d04h."""
    d = abs(d)
    if d < 60:
        return f"{d:.0f}s"
    if d < 3600:
        return f"{int(d // 60)}m{int(d % 60):02d}s"
    if d < 86400:
        return f"{int(d // 3600)}h{int(d % 3600 // 60):02d}m"
    return f"{int(d // 86400)}d{int(d % 86400 // 3600):02d}h"


def fmt_clock(t: Any) -> str:
    """UTC wall clock of a time: 'HH:MM:SS', with the date when not today."""
    e = _epoch(t)
    if e is None:
        return "—"
    st = time.gmtime(e)
    if time.strftime("%Y-%m-%d", st) != time.strftime("%Y-%m-%d", time.gmtime()):
        return time.strftime("%m-%d %H:%M", st)
    return time.strftime("%H:%M:%S", st)


def state_cell(state: str | None, next_contact: Any = None, now: float | None = None,
               compact: bool = False) -> Text:
    """Node state for a table: 'ONLINE', 'ASLEEP →14:05 in 3m' ('ASLEEP→14:05' compact), 'STALE', 'LOST'."""
    s = (state or "UNKNOWN").upper()
    t = Text(s, style=STATE_STYLES.get(s, ""))
    if s == "ASLEEP":
        e = _epoch(next_contact)
        if e is not None:
            now = now if now is not None else time.time()
            clock = fmt_clock(e)
            t.append(f"→{clock[:5] if compact and len(clock) == 8 else clock}", style="cyan")
            if e > now and not compact:
                t.append(f" in {fmt_duration(e - now)}", style="dim")
    return t


def severity_cell(sev: str | None) -> Text:
    s = (sev or "INFO").upper()
    return Text(s, style=SEVERITY_STYLES.get(s, ""))


def stage_cell(stage: str | None) -> Text:
    s = (stage or "?").upper()
    return Text(s, style=STAGE_STYLES.get(s, ""))


def sparkline(values: Sequence[float], width: int) -> Text:
    """A one-line sparkline of the last ``width`` values (min..max scaled to ▁..█)."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))][-width:]
    if not vals:
        return Text("·" * max(width, 0), style="dim")
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return Text("".join(_BLOCKS[1 + int((v - lo) / span * 7.999)] for v in vals), style="cyan")


class Plot:
    """A multi-row block-character chart of one series, with min/max labels.

    The last ``width - label`` samples are drawn; each column is one sample (or the
    average of a bucket of samples when there are more samples than columns).
    """

    def __init__(self, values: Sequence[float], title: str = "", unit: str = "", style: str = "cyan",
                 height: int = 4, limit: str | None = None) -> None:
        self.values = [float(v) for v in values if v is not None]
        self.title = title
        self.unit = unit
        self.style = style
        self.height = max(1, height)
        self.limit = limit

    def lines(self, width: int) -> list[Text]:
        """The plot as ``height + 1`` lines of at most ``width`` cells."""
        label_w = 9
        cols = max(width - label_w - 1, 4)
        vals = _bucket(self.values, cols)
        head = Text(self.title, style="bold")
        if self.values:
            head.append("  ")
            head.append_text(limit_cell(self.values[-1], self.limit, self.unit))
        out = [head]
        if not vals:
            for _ in range(self.height):
                out.append(Text(" " * label_w + "│", style="dim"))
            out[-1].append("no data yet", style="dim")
            return out
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        levels = [int(round((v - lo) / span * (self.height * 8 - 1))) + 1 for v in vals]
        for row in range(self.height - 1, -1, -1):
            if row == self.height - 1:
                label = fmt_number(hi)
            elif row == 0:
                label = fmt_number(lo)
            else:
                label = ""
            line = Text(label[:label_w].rjust(label_w), style="dim")
            line.append("│", style="dim")
            chars = []
            for lv in levels:
                k = lv - row * 8
                chars.append(_BLOCKS[max(0, min(8, k))])
            line.append("".join(chars), style=self.style)
            out.append(line)
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines(options.max_width):
            line.truncate(options.max_width)
            yield line


def _bucket(values: list[float], cols: int) -> list[float]:
    if len(values) <= cols:
        return values
    n = len(values)
    return [sum(values[i * n // cols:(i + 1) * n // cols]) / max(1, (i + 1) * n // cols - i * n // cols)
            for i in range(cols)]


class Waveform:
    """A 3-axis seismic waveform: one envelope strip (min..max per column) per axis."""

    def __init__(self, axes: Mapping[str, Sequence[float]], unit: str = "", rate: float | None = None,
                 height: int = 2, title: str = "seismic") -> None:
        self.axes = {k: [float(x) for x in v] for k, v in axes.items()}
        self.unit = unit
        self.rate = rate
        self.height = height
        self.title = title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        n = max((len(v) for v in self.axes.values()), default=0)
        head = Text(self.title, style="bold")
        if n:
            dur = f" {n / self.rate:.1f}s" if self.rate else ""
            head.append(f"  {n} samples{dur}" + (f" @ {self.rate:g} Hz" if self.rate else "") + f"  [{self.unit}]", style="dim")
        else:
            head.append("  no waveform yet", style="dim")
        yield head
        colors = ["red", "green", "blue", "magenta"]
        for i, (name, vals) in enumerate(self.axes.items()):
            plot = Plot(vals, title=name, unit=self.unit, style=colors[i % len(colors)], height=self.height)
            lines = plot.lines(width)[1:]
            if vals:  # the label column names the axis and its peak instead of min/max
                peak = max(abs(v) for v in vals)
                label = f"{name} ±{fmt_number(peak)}"[:9].ljust(9)
                for j, line in enumerate(lines):
                    rest = line[9:]
                    lines[j] = Text(label if j == 0 else " " * 9, style="bold" if j == 0 else "") + rest
            for line in lines:
                line.truncate(width)
                yield line


def hexdump(data: bytes, width: int = 8) -> Text:
    """Hex of a CCSDS packet, header / secondary header / payload / CRC in separate colours."""
    t = Text()
    n = len(data)
    for off in range(0, n, width):
        t.append(f"{off:04x} ", style="dim")
        for i in range(off, min(off + width, n)):
            if i < 6:
                style = "bold cyan"
            elif i < 12:
                style = "magenta"
            elif i >= n - 2:
                style = "bold yellow"
            else:
                style = ""
            t.append(f"{data[i]:02x}", style=style)
            t.append(" ")
        t.append("\n")
    t.rstrip()
    return t


def packet_view(packet: PacketRow) -> Table:
    """Raw hex beside the decoded fields of one packet of GET /api/packets."""
    raw_hex = packet["hex"]
    try:
        data = bytes.fromhex(raw_hex)
    except ValueError:
        data = b""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column()
    dec = Table.grid(padding=(0, 1))
    dec.add_column(style="bold", no_wrap=True)
    dec.add_column()
    for k in ("apid", "seq", "length", "received"):
        v = packet.get(k)
        if v is not None:
            dec.add_row(Text(k, style="dim"), Text(fmt_clock(v) if k == "received" else str(v), style="dim"))
    for name, v in packet["fields"].items():  # engineering values; a sample block as a list
        if isinstance(v, list):
            dec.add_row(str(name), Text(f"[{len(v)} values]", style="dim"))
        else:
            dec.add_row(str(name), Text(fmt_number(v)))
    grid.add_row(hexdump(data) if data else Text("(no raw bytes)", style="dim"), dec)
    return grid

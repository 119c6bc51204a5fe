"""Console widgets: each owns one piece of the screen, reads the shared ``BaseModel`` and
posts Messages upward; none of them touches the network (the App does, through Feed)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable, Static

from ground.client_types import SeismicView
from ground.console import render

if TYPE_CHECKING:
    from ground.console.model import BaseModel


class StatusBar(Static):
    """One line at the top: connection state, base summary, the ground's health when it is not ok,
    current screen, UTC clock."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; }
    StatusBar.-reconnecting { background: $warning; color: $background; text-style: bold; }
    """

    def __init__(self, title: str, **kw: Any) -> None:
        super().__init__("", **kw)
        self.title = title
        self.text = ""  # the line last shown (tests read it)

    def show(self, model: BaseModel, node: str | None) -> None:
        """Redraw from the model (cheap; called on the screen's tick)."""
        c = model.conn
        t = Text()
        if c.state == "live":
            t.append(" ● LIVE ", style="bold green")
            self.remove_class("-reconnecting")
        elif c.state == "connecting":
            t.append(" … CONNECTING ", style="bold")
            self.remove_class("-reconnecting")
        else:
            t.append(f" ⟳ RECONNECTING #{c.attempts} {render.fmt_duration(time.time() - c.since)} ", style="bold")
            self.add_class("-reconnecting")
        t.append(f"{self.title}", style="bold")
        if node:
            t.append(f" · {node}")
        states: dict[str, int] = {}
        for n in model.nodes.values():
            s = str(n.get("state", "UNKNOWN")).upper()
            states[s] = states.get(s, 0) + 1
        t.append("  ")
        live = c.state == "live"
        if not live:
            t.append("(last known) ", style="italic")
        for s in ("ONLINE", "ASLEEP", "STALE", "LOST"):
            if states.get(s):
                t.append(f"{states[s]} {s.lower()}", style=render.STATE_STYLES[s] if live else "")
                t.append(" ")
        problem = model.health_problem() if live else None
        if problem:  # the ground itself is in trouble (ingest, archive, broker, queue, timers)
            t.append(f" ✖ GROUND: {problem[:70]} ", style="bold white on red")
        n_al = model.unacked_count()
        if n_al:
            t.append(f" ▲{n_al} unacked ", style="bold white on red")
        elif model.alarms:
            t.append(f" {len(model.alarms)} alarms ", style="yellow")
        t.append("  " + time.strftime("%H:%M:%SZ", time.gmtime()), style="dim")
        self.text = t.plain
        self.update(t)


class LiveTable(DataTable[Any]):
    """A DataTable updated in place by row key, so the cursor and scroll survive refreshes."""

    class Picked(Message):
        """Enter on a row: ``key`` is the row key."""

        def __init__(self, table: LiveTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(self, columns: list[tuple[str, str]], **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self._cols = columns

    def on_mount(self) -> None:
        for label, key in self._cols:
            self.add_column(label, key=key)

    def sync(self, rows: list[tuple[str, list[Any]]]) -> None:
        """Make the table show exactly ``rows`` ([(key, cells)]) in that order."""
        keys = [k for k, _ in rows]
        current = [rk.value for rk in self.rows]
        cur_key = self.cursor_key()
        if current != keys:
            self.clear()
            for k, cells in rows:
                self.add_row(*cells, key=k)
            if cur_key in keys:
                self.move_cursor(row=keys.index(cur_key), animate=False)
            return
        col_keys = [k for _, k in self._cols]
        for k, cells in rows:
            for ck, cell in zip(col_keys, cells, strict=False):
                if _cell_repr(self.get_cell(k, ck)) != _cell_repr(cell):
                    self.update_cell(k, ck, cell)

    def cursor_key(self) -> str | None:
        """Key of the row under the cursor, or None."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.Picked(self, str(event.row_key.value)))


def _cell_repr(c: Any) -> Any:
    if isinstance(c, Text):
        return (c.plain, str(c.style), tuple((s.start, s.end, str(s.style)) for s in c.spans))
    return c


class PlotPanel(Static):
    """Live plots of the chosen parameters of one node plus, optionally, its seismic waveform."""

    DEFAULT_CSS = "PlotPanel { height: auto; max-height: 50%; }"

    def show(self, model: BaseModel, node: str | None, chosen: list[tuple[str, str]],
             seismic: SeismicView | None, width: int, height: int) -> None:
        parts: list[Any] = []
        if not node:
            self.update(Text("no node selected", style="dim"))
            return
        n_plots = len(chosen) + (1 if seismic is not None else 0)
        if n_plots == 0:
            self.update(Text("p: plot the highlighted parameter · w: seismic waveform", style="dim"))
            return
        per = max(1, (height - n_plots) // n_plots - 0)
        fdefs = model.dict_fields()
        for pk, f in chosen:
            series = model.series.get((node, pk, f), [])
            rec = model.latest.get(node, {}).get((pk, f), {})
            unit = rec.get("unit") or fdefs.get((pk, f), {}).get("unit", "")  # pushes carry no unit: the dictionary
            parts.append(render.Plot([v for _, v in series], title=f"{pk}.{f}", unit=unit,
                                     height=max(1, per - 1), limit=rec.get("limit")))
        if seismic is not None:
            axes: dict[str, list[float]] = {k: seismic.get(k, []) for k in ("x", "y", "z")}  # one list per axis
            unit = next((str((p.get("samples") or {}).get("unit", "")) for p in  # the dictionary's
                         model.dictionary.get("packets", []) if p.get("name") == "SEISMIC"), "")
            parts.append(render.Waveform(axes, unit=unit,
                                         rate=seismic.get("rate"), height=max(1, (per - 1) // 3 or 1)))
        self.update(Group(*parts))

"""Screen 2, one node: latest values with units and limit states, plots, waveform."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from ground.client_types import SeismicView
from ground.console import render
from ground.console.screens.base import BaseScreen
from ground.console.widgets import LiveTable, PlotPanel


class NodeScreen(BaseScreen):
    """One node: engineering values with limits, live plots, the seismic waveform."""

    TITLE_TEXT = "Node"
    TOPICS = ("nodes", "latest", "series", "connection")
    POLL_S = 1.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "plot", "Plot"),
        Binding("w", "waveform", "Waveform"),
        Binding("left_square_bracket", "prev_node", "◀Node", key_display="["),
        Binding("right_square_bracket", "next_node", "Node▶", key_display="]"),
    ]
    DEFAULT_CSS = """
    NodeScreen #nodehead { height: 1; }
    NodeScreen #params { height: 1fr; }
    NodeScreen PlotPanel { height: auto; max-height: 60%; border-top: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.chosen: dict[str, list[tuple[str, str]]] = {}
        self.show_wave: bool = False
        self.seismic: dict[str, SeismicView] = {}

    def body(self) -> ComposeResult:
        yield Static("", id="nodehead")
        yield LiveTable([("packet", "packet"), ("field", "field"), ("value", "value"), ("limit", "limit"),
                         ("plot", "plot"), ("time", "time")], id="params")
        yield PlotPanel("", id="plots")

    def redraw(self) -> None:
        app = self.capp
        m = app.model
        node = app.node
        head = Text()
        if node is None:
            head.append("no node yet: pick one on the overview (1)", style="dim")
            self.query_one("#nodehead", Static).update(head)
            return
        n = m.nodes.get(node, {})
        head.append(f"{node} ", style="bold")
        head.append_text(render.state_cell(n.get("state"), n.get("next_contact")))
        head.append(" ")
        head.append(f"  mode {n.get('mode') or '—'}  boot {n.get('boot', '—')}  contact {render.fmt_age(n.get('last_contact'))}")
        if n.get("reason"):
            head.append(f"  ({n['reason']})", style="dim")
        self.query_one("#nodehead", Static).update(head)
        chosen = self.chosen.get(node, [])
        rows = []
        for (pk, f), rec in sorted(m.latest.get(node, {}).items()):
            lim = str(rec.get("limit") or "ok")
            rows.append((f"{pk}.{f}", [
                Text(pk, style="dim"), Text(f),
                (Text(str(rec["text"]), style=render.LIMIT_STYLES.get(lim, "")) if rec.get("text") is not None
                 else render.limit_cell(rec.get("value"), lim, str(rec.get("unit") or ""))),
                Text(lim, style=render.LIMIT_STYLES.get(lim, "")),
                Text("◆" if (pk, f) in chosen else "", style="cyan"),
                Text(render.fmt_clock(rec["time"]), style="dim"),
            ]))
        self.query_one(LiveTable).sync(rows)
        plots = self.query_one(PlotPanel)
        h = max(4, self.size.height // 2)
        plots.display = bool(chosen or self.show_wave)
        plots.show(m, node, chosen, self.seismic.get(node, SeismicView()) if self.show_wave else None,
                   max(self.size.width - 2, 20), h)

    def poll(self) -> None:
        if self.capp.node:
            self._fetch(self.capp.node, self.show_wave)

    @work(exclusive=True, group="node-poll")
    async def _fetch(self, node: str, wave: bool) -> None:
        feed = self.capp.feed
        latest = await feed.call("latest", node)
        if latest is not None:
            self.capp.model.set_latest(node, latest)
        if wave:
            s = await feed.call("seismic", node, seconds=30)
            if s is not None:
                self.seismic[node] = s
                self.force_redraw()

    def action_plot(self) -> None:
        node = self.capp.node
        key = self.query_one(LiveTable).cursor_key()
        if not node or not key:
            return
        pk, f = key.split(".", 1)
        lst = self.chosen.setdefault(node, [])
        if (pk, f) in lst:
            lst.remove((pk, f))
        else:
            lst.append((pk, f))
            del lst[:-3]  # three plots fit an 80x24 terminal
            self.capp.model.series.setdefault((node, pk, f), __import__("collections").deque(maxlen=600))
            self._history(node, pk, f)
        self.force_redraw()

    @work(group="history")
    async def _history(self, node: str, pk: str, f: str) -> None:
        hist = await self.capp.feed.call("params", node=node, packet=pk, field=f, since=time.time() - 600, limit=600)
        if hist:
            self.capp.model.seed_series(node, pk, f, hist)

    def action_waveform(self) -> None:
        self.show_wave = not self.show_wave
        self._last_poll = 0.0
        self.force_redraw()

    def action_prev_node(self) -> None:
        self.capp.cycle_node(-1)

    def action_next_node(self) -> None:
        self.capp.cycle_node(1)

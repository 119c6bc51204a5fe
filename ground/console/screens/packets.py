"""Screen 5, packets: the latest raw packets of a node, hex and decoded fields."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from ground.client_types import PacketRow
from ground.console import render
from ground.console.screens.base import BaseScreen
from ground.console.widgets import LiveTable


class PacketsScreen(BaseScreen):
    """The latest raw packets of one node: hex (header/time/payload/CRC coloured) and decoded."""

    TITLE_TEXT = "Packets"
    TOPICS = ("connection",)
    POLL_S = 1.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "freeze", "Freeze"),
        Binding("left_square_bracket", "prev_node", "◀Node", key_display="["),
        Binding("right_square_bracket", "next_node", "Node▶", key_display="]"),
    ]
    DEFAULT_CSS = """
    PacketsScreen #plist { height: 8; }
    PacketsScreen #pview { height: 1fr; border-top: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.packets: dict[str, list[PacketRow]] = {}
        self.frozen = False
        self._pv = 0

    def body(self) -> ComposeResult:
        yield LiveTable([("time", "time"), ("packet", "packet"), ("apid", "apid"), ("seq", "seq"), ("len", "len")],
                        id="plist")
        with VerticalScroll(id="pview"):
            yield Static("", id="pdetail")

    def _tick(self) -> None:
        super()._tick()

    def redraw(self) -> None:
        node = self.capp.node
        pkts = self.packets.get(node or "", [])
        rows = []
        for i, p in enumerate(pkts):
            rows.append((f"{p['packet']}-{p['seq']}-{p['received']}-{i}", [
                Text(render.fmt_clock(p["received"]), style="dim"),
                Text(p["packet"], style="bold"),
                Text(str(p["apid"])),
                Text(str(p["seq"])),
                Text(str(p["length"])),
            ]))
        table = self.query_one(LiveTable)
        table.sync(rows)
        self._show_detail()

    def _show_detail(self) -> None:
        node = self.capp.node
        pkts = self.packets.get(node or "", [])
        table = self.query_one(LiveTable)
        detail = self.query_one("#pdetail", Static)
        if not pkts:
            detail.update(Text("no packets yet" if node else "no node selected", style="dim"))
            return
        idx = min(table.cursor_row, len(pkts) - 1) if table.row_count else 0
        p = pkts[max(idx, 0)]
        title = Text(f"{p['packet']}  ", style="bold")
        title.append("hdr", style="bold cyan")
        title.append(" time", style="magenta")
        title.append(" payload")
        title.append(" crc", style="bold yellow")
        if self.frozen:
            title.append("  [frozen: f to resume]", style="bold yellow")
        from rich.console import Group

        detail.update(Group(title, render.packet_view(p)))

    @on(DataTable.RowHighlighted, "#plist")
    def _highlight(self) -> None:
        self._show_detail()

    def poll(self) -> None:
        if self.capp.node and not self.frozen:
            self._fetch(self.capp.node)

    @work(exclusive=True, group="packets-poll")
    async def _fetch(self, node: str) -> None:
        res = await self.capp.feed.call("packets", node, limit=20)
        if res is not None:
            self.packets[node] = list(res)
            self.force_redraw()

    def action_freeze(self) -> None:
        self.frozen = not self.frozen
        self.force_redraw()

    def action_prev_node(self) -> None:
        self.capp.cycle_node(-1)

    def action_next_node(self) -> None:
        self.capp.cycle_node(1)

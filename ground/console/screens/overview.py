"""Screen 1, the base overview: one row per node."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from ground.console import render
from ground.console.screens.base import BaseScreen
from ground.console.widgets import LiveTable


class OverviewScreen(BaseScreen):
    """Every node: state, mode, power, temperatures, link quality, last contact, counters."""

    TITLE_TEXT = "Base overview"
    TOPICS = ("nodes", "latest", "links", "connection")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "open", "Open node", show=True)]

    COLUMNS = [("node", "node"), ("state", "state"), ("heard", "contact"), ("mode", "mode"), ("SOC%", "soc"),
               ("batV", "batt"), ("Tel°C", "telec"), ("Tbat", "tbatt"), ("pkt/s", "pps"),
               ("err/gap/dup", "egd"), ("drop", "drop")]
    MODE_SHORT = {"EMERGENCY": "EMERG"}

    def body(self) -> ComposeResult:
        yield LiveTable(self.COLUMNS, id="nodes")

    def redraw(self) -> None:
        m = self.capp.model
        rows = []
        now = time.time()
        for nid in m.node_ids():
            n = m.nodes[nid]
            link = n["link"]
            n_err = sum(link["errors"].values())
            gaps, dups = link["gaps"], link["duplicates"]
            egd = Text()
            egd.append(str(n_err), style="bold red" if n_err else "dim")
            egd.append("/", style="dim")
            egd.append(str(gaps), style="yellow" if gaps else "dim")
            egd.append("/", style="dim")
            egd.append(str(dups), style="yellow" if dups else "dim")
            mode = n["mode"] or "—"
            dropped = m.latest.get(nid, {}).get(("HK", "journal_dropped"), {}).get("value")
            rows.append((nid, [
                Text(nid, style="bold"),
                render.state_cell(n["state"], n["next_contact"], now, compact=True),
                Text(render.fmt_age(n["last_contact"], now).replace(" ago", "")),
                Text(self.MODE_SHORT.get(mode, mode), style="bold magenta" if mode in ("SAFE", "EMERGENCY") else ""),
                self._val(nid, n["soc"], "POWER", "battery_soc"),
                self._val(nid, n["battery_voltage"], "POWER", "battery_voltage"),
                self._val(nid, n["electronics_temp"], "THERMAL", "electronics_temp"),
                self._val(nid, n["battery_temp"], "POWER", "battery_temp"),
                Text(render.fmt_number(link["packets_per_s"])),
                egd,
                Text(render.fmt_number(dropped or 0), style="yellow" if dropped else "dim"),
            ]))
        self.query_one(LiveTable).sync(rows)

    def _val(self, nid: str, value: float | None, packet: str, fld: str) -> Text:
        """The node's value, coloured by the limit state of the latest ``packet.fld``."""
        rec = self.capp.model.latest.get(nid, {}).get((packet, fld), {})
        v, lim = value, rec.get("limit")
        if v is None:
            return Text("—", style="dim")
        return render.limit_cell(v, lim)

    def action_open(self) -> None:
        key = self.query_one(LiveTable).cursor_key()
        if key:
            self.capp.open_node(key)

    @on(LiveTable.Picked)
    def _picked(self, ev: LiveTable.Picked) -> None:
        self.capp.open_node(ev.key)

"""Screen 3, alarms: acknowledge, shelve (``ShelveScreen``), unshelve."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from ground.console import render
from ground.console.screens.base import BaseScreen
from ground.console.widgets import LiveTable


class ShelveScreen(ModalScreen[int | None]):
    """Ask for how many minutes to shelve an alarm."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ShelveScreen { align: center middle; }
    ShelveScreen > Vertical { width: 50; height: auto; border: thick $warning; background: $surface; padding: 1; }
    """

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Shelve {self.what} for how many minutes? (Enter, Esc cancels)")
            yield Input(value="60", id="minutes", type="integer")

    @on(Input.Submitted)
    def _ok(self, ev: Input.Submitted) -> None:
        try:
            minutes = int(ev.value)
        except ValueError:
            return
        if 1 <= minutes <= 7 * 24 * 60:
            self.dismiss(minutes)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AlarmsScreen(BaseScreen):
    """Active alarms worst first (acknowledge, shelve, unshelve) and the event log."""

    TITLE_TEXT = "Alarms"
    TOPICS = ("alarms", "events", "connection")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "ack", "Ack"),
        Binding("s", "shelve", "Shelve"),
        Binding("u", "unshelve", "Unshelve"),
        Binding("tab", "app.focus_next", "Alarms/Events", show=False),
    ]
    DEFAULT_CSS = """
    AlarmsScreen #alarms { height: 1fr; }
    AlarmsScreen #events { height: 1fr; border-top: solid $primary; }
    """

    def body(self) -> ComposeResult:
        yield LiveTable([("sev", "sev"), ("node", "node"), ("parameter", "param"), ("value", "value"),
                         ("state", "state"), ("since", "since"), ("message", "msg")], id="alarms")
        yield LiveTable([("time", "time"), ("node", "node"), ("sev", "sev"), ("event", "event"),
                         ("detail", "detail")], id="events")

    def redraw(self) -> None:
        m = self.capp.model
        rows = []
        now = time.time()
        for a in m.active_alarms():
            st = a["state"].upper()
            until = a["shelved_until"]
            if a["shelved"] or (until is not None and until > now):
                st = f"SHELVED→{render.fmt_clock(until)[:5]}" if until is not None else "SHELVED"
            elif st == "ACKNOWLEDGED":
                st = "ACKED"
            sev = a["severity"].upper()
            note = []
            if a["returned"]:
                note.append("back in limits")
            if a["acked_by"]:
                note.append(f"ack {a['acked_by']}")
            if a["max_severity"] != a["severity"]:
                note.append(f"max {a['max_severity']}")
            rows.append((str(a["id"]), [
                render.severity_cell(sev),
                Text(a["node"]),
                Text(f"{a['packet']}.{a['field']}"),
                render.limit_cell(a["value"], "red" if sev in ("CRITICAL", "RED") else "yellow", a["unit"] or ""),
                Text(st, style="bold" if st == "RAISED" else "dim"),
                Text(render.fmt_age(a["raised_at"]).replace(" ago", "")),
                Text(", ".join(note), style="dim"),
            ]))
        self.query_one("#alarms", LiveTable).sync(rows)
        evs = list(m.events)[-200:][::-1]
        erows = []
        for e in evs:
            erows.append((str(e["id"]), [
                Text(render.fmt_clock(e["t"]), style="dim"),
                Text(e["node"] or ""),
                render.severity_cell(e["severity"]),
                Text(str(e["data"].get("code") or e["kind"])),  # an EVENT packet's code, else the kind
                Text(e["message"]),
            ]))
        # the event log only grows; rebuild it only when its keys changed
        self.query_one("#events", LiveTable).sync(erows)

    def _selected(self) -> str | None:
        return self.query_one("#alarms", LiveTable).cursor_key()

    def action_ack(self) -> None:
        aid = self._selected()
        if aid:
            self._act("ack", aid)

    def action_unshelve(self) -> None:
        aid = self._selected()
        if aid:
            self._act("unshelve", aid)

    def action_shelve(self) -> None:
        aid = self._selected()
        if not aid:
            return

        def done(minutes: int | None) -> None:
            if minutes:
                self._act("shelve", aid, minutes)

        self.app.push_screen(ShelveScreen(f"alarm {aid}"), done)

    @work(group="alarm-action")
    async def _act(self, what: str, aid: str, *args: Any) -> None:
        feed = self.capp.feed
        res = await feed.call(what, int(aid) if aid.isdigit() else aid, *args)
        if res is None:
            self.notify(f"{what} {aid}: the ground did not answer", severity="error")
            return
        self.notify(f"alarm {aid}: {what} done")
        alarms = await feed.call("alarms")
        if alarms is not None:
            self.capp.model.set_alarms(alarms)

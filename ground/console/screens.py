"""The console's screens: overview, node detail, alarms, commanding, packets, links.

Every screen redraws on a timer (``REFRESH_S``) and only when the model topics it shows
changed, so a burst of pushes costs one redraw.  On-demand reads (latest values, history,
packets, waveform) run as exclusive workers while the screen is visible, never awaited in
a handler, so keys stay responsive whatever the network does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static

from ground.console import render
from ground.console.commands import command_def, validate_arg
from ground.console.widgets import LiveTable, PlotPanel, StatusBar

if TYPE_CHECKING:
    from ground.console.app import ConsoleApp

REFRESH_S = 0.4  # at most ~2.5 redraws per second per screen


class BaseScreen(Screen[None]):
    """Status bar + body + footer; a coalescing refresh tick; helpers to reach the app."""

    TITLE_TEXT = ""
    TOPICS: ClassVar[tuple[str, ...]] = ()
    POLL_S: ClassVar[float] = 0.0  # >0: call poll() this often while visible

    def __init__(self) -> None:
        super().__init__()
        self._seen: tuple[Any, ...] | None = None
        self._last_poll = 0.0

    @property
    def capp(self) -> ConsoleApp:
        return cast("ConsoleApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar(self.TITLE_TEXT, id="status")
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self._tick)

    def on_screen_resume(self) -> None:
        self._seen = None
        self._last_poll = 0.0
        self._tick()

    def _tick(self) -> None:
        if not self.is_current:
            return
        app = self.capp
        self.query_one(StatusBar).show(app.model, app.node)
        key = (app.model.version(*self.TOPICS), app.node, self.size)
        if key != self._seen:
            self._seen = key
            self.redraw()
        if self.POLL_S and time.monotonic() - self._last_poll >= self.POLL_S:
            self._last_poll = time.monotonic()
            self.poll()

    def force_redraw(self) -> None:
        self._seen = None

    def redraw(self) -> None:
        """Update widgets from the model (override)."""

    def poll(self) -> None:
        """Start on-demand reads (override; must not block)."""


# ---------------------------------------------------------------------------------
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
            link = n.get("link") or m.links.get(nid) or {}
            errs = link.get("errors") or {}
            n_err = sum(errs.values()) if isinstance(errs, dict) else (errs or 0)
            gaps, dups = link.get("gaps") or 0, link.get("duplicates") or 0
            egd = Text()
            egd.append(str(n_err), style="bold red" if n_err else "dim")
            egd.append("/", style="dim")
            egd.append(str(gaps), style="yellow" if gaps else "dim")
            egd.append("/", style="dim")
            egd.append(str(dups), style="yellow" if dups else "dim")
            mode = str(n.get("mode") or "—")
            dropped = n.get("journal_dropped", m.latest.get(nid, {}).get(("HK", "journal_dropped"), {}).get("value"))
            rows.append((nid, [
                Text(nid, style="bold"),
                render.state_cell(n.get("state"), n.get("next_contact"), now, compact=True),
                Text(render.fmt_age(n.get("last_contact"), now).replace(" ago", "")),
                Text(self.MODE_SHORT.get(mode, mode), style="bold magenta" if mode in ("SAFE", "EMERGENCY") else ""),
                self._val(nid, n, "soc", "POWER", "battery_soc"),
                self._val(nid, n, "battery_voltage", "POWER", "battery_voltage"),
                self._val(nid, n, "electronics_temp", "THERMAL", "electronics_temp"),
                self._val(nid, n, "battery_temp", "POWER", "battery_temp"),
                Text(render.fmt_number(_f(link.get("packets_per_s")))),
                egd,
                Text(render.fmt_number(dropped or 0), style="yellow" if dropped else "dim"),
            ]))
        self.query_one(LiveTable).sync(rows)

    def _val(self, nid: str, n: dict[str, Any], key: str, packet: str, fld: str) -> Text:
        m = self.capp.model
        rec = m.latest.get(nid, {}).get((packet, fld), {})
        v = n.get(key, rec.get("value"))
        lim = (n.get("limits") or {}).get(key) or (n.get("limits") or {}).get(fld) or rec.get("limit")
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


def _f(v: Any) -> Any:
    return round(v, 1) if isinstance(v, float) else v


# ---------------------------------------------------------------------------------
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
        self.seismic: dict[str, dict[str, Any]] = {}

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
                Text(render.fmt_clock(rec.get("time") or rec.get("t")), style="dim"),
            ]))
        self.query_one(LiveTable).sync(rows)
        plots = self.query_one(PlotPanel)
        h = max(4, self.size.height // 2)
        plots.display = bool(chosen or self.show_wave)
        plots.show(m, node, chosen, self.seismic.get(node, {}) if self.show_wave else None,
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
        rows = await self.capp.feed.call("params", node=node, packet=pk, field=f, since=time.time() - 600, limit=600)
        if rows:
            if isinstance(rows, dict):
                rows = rows.get("rows") or rows.get("values") or rows.get("samples") or []
            self.capp.model.seed_series(node, pk, f, rows)

    def action_waveform(self) -> None:
        self.show_wave = not self.show_wave
        self._last_poll = 0.0
        self.force_redraw()

    def action_prev_node(self) -> None:
        self.capp.cycle_node(-1)

    def action_next_node(self) -> None:
        self.capp.cycle_node(1)


# ---------------------------------------------------------------------------------
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
        for a in m.active_alarms():
            st = str(a.get("state") or "raised").upper()
            if a.get("shelved") or (a.get("shelved_until") and float(a["shelved_until"]) > time.time()):
                st = f"SHELVED→{render.fmt_clock(a['shelved_until'])[:5]}" if a.get("shelved_until") else "SHELVED"
            elif st == "ACKNOWLEDGED":
                st = "ACKED"
            param = a.get("parameter") or ".".join(str(a[k]) for k in ("packet", "field") if a.get(k)) or str(a.get("name", ""))
            sev = str(a.get("severity") or "").upper()
            note = []
            if a.get("returned"):
                note.append("back in limits")
            if a.get("acked_by"):
                note.append(f"ack {a['acked_by']}")
            if a.get("max_severity") and a.get("max_severity") != a.get("severity"):
                note.append(f"max {a['max_severity']}")
            if a.get("message"):
                note.append(str(a["message"]))
            rows.append((str(a.get("id")), [
                render.severity_cell(sev),
                Text(str(a.get("node", ""))),
                Text(param),
                render.limit_cell(a.get("value"), a.get("limit") or ("red" if sev in ("CRITICAL", "RED") else "yellow"), str(a.get("unit") or "")),
                Text(st, style="bold" if st in ("RAISED", "ACTIVE", "UNACKED") else "dim"),
                Text(render.fmt_age(a.get("raised_at") or a.get("time") or a.get("t")).replace(" ago", "")),
                Text(", ".join(note), style="dim"),
            ]))
        self.query_one("#alarms", LiveTable).sync(rows)
        evs = list(m.events)[-200:][::-1]
        erows = []
        for i, e in enumerate(evs):
            key = str(e.get("id") or f"{e.get('time') or e.get('t')}-{e.get('node')}-{i}")
            erows.append((key, [
                Text(render.fmt_clock(e.get("time") or e.get("t")), style="dim"),
                Text(str(e.get("node") or "")),
                render.severity_cell(e.get("severity")),
                Text(str(e.get("event") or (e.get("data") or {}).get("code") or e.get("kind") or "")),
                Text(str(e.get("message") or e.get("text") or e.get("detail") or "")),
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


class ConfirmScreen(ModalScreen[bool]):
    """A hazardous command needs an explicit 'y'."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "yes", "Send it"), Binding("n,escape", "no", "Cancel")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; height: auto; border: thick $error; background: $surface; padding: 1; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("⚠ HAZARDOUS COMMAND", style="bold white on red"))
            yield Static(self.text)
            yield Static(Text("y: send it   n / Esc: cancel", style="bold"))
        yield Footer()

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class CommandScreen(BaseScreen):
    """Pick node + command, fill validated arguments, confirm hazards, follow the stages."""

    TITLE_TEXT = "Commanding"
    TOPICS = ("commands", "dictionary", "nodes", "connection")
    POLL_S = 1.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("escape", "leave_field", "Leave field"),
        Binding("ctrl+o", "decide('approve')", "Approve", priority=True),
        Binding("ctrl+x", "decide('deny')", "Deny", priority=True),
    ]
    DEFAULT_CSS = """
    CommandScreen #form { height: auto; max-height: 60%; }
    CommandScreen #pick { height: auto; }
    CommandScreen #pick Select { width: 1fr; }
    CommandScreen #args { height: auto; }
    CommandScreen .arg { height: auto; }
    CommandScreen .arg Label { width: 14; padding: 1 0 0 1; }
    CommandScreen .arg Input, CommandScreen .arg Select { width: 1fr; }
    CommandScreen #cmdhelp { height: auto; color: $text-muted; padding: 0 1; }
    CommandScreen #cmdbar { height: 3; }
    CommandScreen #cmdbar Button { min-width: 12; }
    CommandScreen #cmderr { width: 1fr; padding: 1 1 0 1; color: $error; }
    CommandScreen #history { height: 1fr; min-height: 5; border-top: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._dict_version = -1
        self._node_set: tuple[str, ...] = ()
        self._built_for: str | None = None
        self._build_serial = 0

    def body(self) -> ComposeResult:
        with VerticalScroll(id="form"):
            with Horizontal(id="pick"):
                yield Select([], prompt="node", id="node", allow_blank=True)
                yield Select([], prompt="command", id="command", allow_blank=True)
            yield Static("", id="cmdhelp")
            yield Vertical(id="args")
            with Horizontal(id="cmdbar"):
                yield Button("Send ^s", id="send", variant="primary")
                yield Static("", id="cmderr")
        yield LiveTable([("id", "id"), ("node", "node"), ("command", "command"), ("args", "args"),
                         ("stage", "stage"), ("detail", "detail"), ("time", "time")], id="history")

    def redraw(self) -> None:
        m = self.capp.model
        nodes = tuple(m.node_ids())
        node_sel = self.query_one("#node", Select)
        if nodes != self._node_set:
            self._node_set = nodes
            cur = node_sel.value
            node_sel.set_options([(n, n) for n in nodes])
            if cur in nodes:
                node_sel.value = cur
            elif self.capp.node in nodes:
                node_sel.value = self.capp.node
        if m.versions["dictionary"] != self._dict_version:
            self._dict_version = m.versions["dictionary"]
            cmd_sel = self.query_one("#command", Select)
            cmd_sel.set_options([(f"{c['name']}{' ⚠' if c.get('hazardous') else ''}", c["name"]) for c in m.dict_commands()])
        rows = []
        for c in m.commands_list()[:100]:
            args = c.get("args") or {}
            rows.append((str(c.get("id")), [
                Text(str(c.get("id"))), Text(str(c.get("node", ""))), Text(str(c.get("command", ""))),
                Text(" ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else str(args), style="dim"),
                render.stage_cell(c.get("stage")),
                Text(str(c.get("reason") or c.get("detail") or c.get("error") or ""), style="dim"),
                Text(render.fmt_clock(c.get("updated") or c.get("submitted") or c.get("created")), style="dim"),
            ]))
        self.query_one("#history", LiveTable).sync(rows)

    def action_leave_field(self) -> None:
        """Escape from a text field so digits switch screens again."""
        self.query_one("#history", LiveTable).focus()

    def _command_def(self) -> dict[str, Any] | None:
        name = self.query_one("#command", Select).value
        for c in self.capp.model.dict_commands():
            if c.get("name") == name:
                return c
        return None

    @on(Select.Changed, "#command")
    async def _command_changed(self, ev: Select.Changed) -> None:
        c = self._command_def()
        box = self.query_one("#args", Vertical)
        await box.remove_children()
        self._build_serial += 1
        self.query_one("#cmderr", Static).update("")
        if c is None:
            self.query_one("#cmdhelp", Static).update("")
            return
        desc = Text(str(c.get("description", "")))
        if c.get("hazardous"):
            desc.append("  ⚠ hazardous: asks for confirmation", style="bold red")
        self.query_one("#cmdhelp", Static).update(desc)
        widgets = []
        for a in c.get("args", []):
            wid = f"arg-{self._build_serial}-{a['name']}"
            enum = a.get("enum")
            if isinstance(enum, dict) and enum:
                field: Any = Select([(str(v), str(v)) for v in enum.values()], prompt=a["name"], id=wid, allow_blank=True)
            else:
                hint = []
                if a.get("min") is not None or a.get("max") is not None:
                    hint.append(f"{render.fmt_number(a.get('min'))}..{render.fmt_number(a.get('max'))}")
                if a.get("unit"):
                    hint.append(str(a["unit"]))
                field = Input(placeholder=" ".join(hint) or str(a.get("type", "")), id=wid)
            widgets.append(Horizontal(Label(a["name"]), field, classes="arg"))
        if widgets:
            await box.mount_all(widgets)
        self._built_for = c.get("name")

    def _collect(self) -> tuple[dict[str, Any] | None, str | None]:
        c = self._command_def()
        if c is None:
            return None, "pick a command"
        args: dict[str, Any] = {}
        for a in c.get("args", []):
            wid = f"#arg-{self._build_serial}-{a['name']}"
            w = self.query_one(wid)
            value = getattr(w, "value", None)
            text = "" if value in (None, Select.BLANK) else str(value)
            if text == "" :
                return None, f"{a['name']}: required"
            v, err = validate_arg(a, text.strip())
            if err:
                return None, f"{a['name']}: {err}"
            args[a["name"]] = v
        try:
            command_def(c).pack_args(**args)  # the set as a whole, as the ground will pack it
        except ValueError as e:
            return None, str(e)
        return args, None

    @on(Button.Pressed, "#send")
    def _send_pressed(self) -> None:
        self.action_send()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_send()

    def action_decide(self, verb: str) -> None:
        """Approve or deny (two-person rule) the command highlighted in the history table."""
        t = self.query_one("#history", LiveTable)
        cid = None
        if t.row_count:
            try:
                cid = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
            except Exception:  # noqa: BLE001 - no row under the cursor
                cid = None
        if cid is None or not str(cid).isdigit():
            self.query_one("#cmderr", Static).update("highlight a command in the history table first")
            return
        self._decide(verb, int(str(cid)))

    @work(group="command-decide")
    async def _decide(self, verb: str, cid: int) -> None:
        feed = self.capp.feed
        res = await feed.call("approve_command" if verb == "approve" else "deny_command", cid)
        err_box = self.query_one("#cmderr", Static)
        if not isinstance(res, dict) or "id" not in res:
            err_box.update(f"{verb} #{cid}: refused ({feed.last_error or res!r})"[:200])
            return
        err_box.update(Text(f"#{cid} {res.get('command', '')}: {res.get('stage', '')} ({verb}d by you)", style="green"))
        self.capp.model.set_commands([res])

    def action_send(self) -> None:
        if not self.is_current:
            return
        err_box = self.query_one("#cmderr", Static)
        node = self.query_one("#node", Select).value
        if node in (None, Select.BLANK):
            err_box.update("pick a node")
            return
        args, err = self._collect()
        if err:
            err_box.update(err)
            return
        c = self._command_def()
        assert c is not None and args is not None
        err_box.update("")
        text = f"{c['name']} {' '.join(f'{k}={v}' for k, v in args.items())} → {node}"
        if c.get("hazardous"):
            def done(ok: bool | None) -> None:
                if ok:
                    self._send(str(node), c["name"], args, True)
                else:
                    err_box.update("cancelled")

            self.app.push_screen(ConfirmScreen(text), done)
        else:
            self._send(str(node), c["name"], args, False)

    @work(group="command-send")
    async def _send(self, node: str, command: str, args: dict[str, Any], confirm: bool) -> None:
        feed = self.capp.feed
        res = await feed.call("send_command", node=node, command=command, args=args, confirm=confirm)
        err_box = self.query_one("#cmderr", Static)
        if not isinstance(res, dict) or "id" not in res:
            err_box.update(f"{command}: the ground refused or did not answer ({feed.last_error or res!r})"[:200])
            return
        note = f" (another commander: lunabase approve {res['id']})" if res.get("stage") == "AWAITING_APPROVAL" else ""
        err_box.update(Text(f"{command} → {node}: id {res['id']} {res.get('stage', '')}{note}", style="green"))
        self.capp.model.set_commands([{"node": node, "command": command, "args": args, **res,
                                       "created": time.time()}])

    def poll(self) -> None:
        self._fetch()

    @work(exclusive=True, group="command-poll")
    async def _fetch(self) -> None:
        res = await self.capp.feed.call("commands")
        if res is not None:
            self.capp.model.set_commands(res)


# ---------------------------------------------------------------------------------
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
        self.packets: dict[str, list[dict[str, Any]]] = {}
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
            h = p.get("header") or {}
            key = f"{p.get('packet') or p.get('name')}-{h.get('seq', p.get('seq'))}-{p.get('received') or p.get('time') or i}"
            rows.append((key, [
                Text(render.fmt_clock(p.get("received") or p.get("time")), style="dim"),
                Text(str(p.get("packet") or p.get("name") or "?"), style="bold"),
                Text(str(h.get("apid", p.get("apid", "")))),
                Text(str(h.get("seq", p.get("seq", "")))),
                Text(str(len(str(p.get("hex") or p.get("raw") or "")) // 2)),
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
        title = Text(f"{p.get('packet') or p.get('name')}  ", style="bold")
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
            if isinstance(res, dict):
                res = res.get("packets", [])
            self.packets[node] = list(res)
            self.force_redraw()

    def action_freeze(self) -> None:
        self.frozen = not self.frozen
        self.force_redraw()

    def action_prev_node(self) -> None:
        self.capp.cycle_node(-1)

    def action_next_node(self) -> None:
        self.capp.cycle_node(1)


# ---------------------------------------------------------------------------------
class LinksScreen(BaseScreen):
    """Per link: packet and byte rates, errors by reason, rejected bytes, gaps, duplicates."""

    TITLE_TEXT = "Links"
    TOPICS = ("links", "nodes", "connection")

    def body(self) -> ComposeResult:
        yield LiveTable([("link", "link"), ("pkt/s", "pps"), ("B/s", "bps"), ("packets", "packets"),
                         ("gaps", "gaps"), ("dup", "dup"), ("rej B", "rej"), ("errors by reason", "errors")],
                        id="links")
        yield Static("", id="linkhelp")

    def redraw(self) -> None:
        m = self.capp.model
        links = dict(m.links)
        for nid, n in m.nodes.items():  # nodes carry their own link block too
            if isinstance(n.get("link"), dict) and nid not in links:
                links[nid] = n["link"]
        rows = []
        for k in sorted(links):
            lk = links[k]
            errs = lk.get("errors") or {}
            etxt = Text()
            if isinstance(errs, dict):
                for r, n in sorted(errs.items(), key=lambda x: -x[1]):
                    if n:
                        etxt.append(f"{r}:{n} ", style="bold red")
            if not etxt.plain:
                etxt.append("none", style="dim")
            rows.append((k, [
                Text(k, style="bold"),
                Text(render.fmt_number(_f(lk.get("packets_per_s")))),
                Text(render.fmt_number(_f(lk.get("bytes_per_s")))),
                Text(render.fmt_number(lk.get("packets") or lk.get("packets_total"))),
                Text(str(lk.get("gaps", 0) or 0), style="yellow" if lk.get("gaps") else "dim"),
                Text(str(lk.get("duplicates", 0) or 0), style="yellow" if lk.get("duplicates") else "dim"),
                Text(str(lk.get("rejected_bytes", 0) or 0), style="red" if lk.get("rejected_bytes") else "dim"),
                etxt,
            ]))
        self.query_one(LiveTable).sync(rows)
        self.query_one("#linkhelp", Static).update(
            Text("gaps: missing sequence counts · dup: duplicates discarded · rej B: bytes rejected (reason beside)", style="dim"))

"""Screen 4, commanding: dictionary commands, arguments checked by the dictionary's own
``CommandDef`` (ground/console/commands.py), hazardous ones confirmed (``ConfirmScreen``).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from ground.client_types import CommandRow
from ground.console import render
from ground.console.commands import command_def, validate_arg
from ground.console.screens.base import BaseScreen
from ground.console.widgets import LiveTable


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
            rows.append((str(c["id"]), [
                Text(str(c["id"])), Text(c["node"]), Text(c["command"]),
                Text(" ".join(f"{k}={v}" for k, v in c["args"].items()), style="dim"),
                render.stage_cell(c["stage"]),
                Text(c["reason"] or "", style="dim"),
                Text(render.fmt_clock(c["updated"]), style="dim"),
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
            except Exception:  # no row under the cursor
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
        row = cast(CommandRow, res)
        err_box.update(Text(f"#{cid} {row['command']}: {row['stage']} ({verb}d by you)", style="green"))
        self.capp.model.set_commands([row])

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
        row = cast(CommandRow, res)  # POST /api/commands answers the command's row
        note = f" (another commander: lunabase approve {row['id']})" if row["stage"] == "AWAITING_APPROVAL" else ""
        err_box.update(Text(f"{command} → {node}: id {row['id']} {row['stage']}{note}", style="green"))
        self.capp.model.set_commands([row])

    def poll(self) -> None:
        self._fetch()

    @work(exclusive=True, group="command-poll")
    async def _fetch(self) -> None:
        res = await self.capp.feed.call("commands")
        if res is not None:
            self.capp.model.set_commands(res)

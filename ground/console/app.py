"""The operator console App: six screens (Textual modes) over one ``BaseModel`` fed by ``Feed``."""

from __future__ import annotations

import getpass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from ground.console.feed import Feed
from ground.console.model import BaseModel
from ground.console.screens import (
    AlarmsScreen,
    CommandScreen,
    LinksScreen,
    NodeScreen,
    OverviewScreen,
    PacketsScreen,
)

HELP = """\
[b]lunabase console[/b]: the base as the ground sees it.

[b]Screens[/b] (press the digit from anywhere)
[b]1 Base[/b]     every node: ONLINE / ASLEEP→next contact / STALE /
           LOST, mode, battery, temperatures, packet rate,
           errors/gaps/dups, last heard. [b]Enter[/b] opens the node.
[b]2 Node[/b]     values with units and limit colours.
           [b]p[/b] plot the highlighted parameter (up to 3)
           [b]w[/b] seismic waveform   [b][[/b] [b]][/b] previous / next node
[b]3 Alarms[/b]   worst first. [b]a[/b] acknowledge  [b]s[/b] shelve  [b]u[/b] unshelve
           event log below ([b]Tab[/b] switches table)
[b]4 Command[/b]  pick node + command, fill the arguments (checked
           against the dictionary), [b]Ctrl+S[/b] sends, [b]Esc[/b] leaves
           a field. Hazardous commands ask for [b]y[/b] and wait
           AWAITING_APPROVAL for a second commander: [b]Ctrl+O[/b]
           approves, [b]Ctrl+X[/b] denies the highlighted one. The table
           follows QUEUED→SENT→ACCEPTED→EXECUTED (or REJECTED,
           FAILED, TIMED_OUT, EXPIRED, DENIED with the reason).
[b]5 Packets[/b]  raw hex beside decoded fields; [b]f[/b] freezes the list
[b]6 Links[/b]    packet/byte rates, errors by reason, gaps, dups

[b]Colours[/b]  [green]ok[/] · [black on yellow]yellow limit[/] · [white on red]red limit[/] · dim: no data

Top line: [b]● LIVE[/b], or [b]⟳ RECONNECTING[/b] while the ground is
away (the last known picture stays; the console catches up
by itself).  [b]?[/b] this help   [b]q[/b] quit   [b]Esc[/b] close
"""


class HelpScreen(ModalScreen[None]):
    """Keys and screens."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100%; max-width: 76; height: 100%; max-height: 30; border: round $primary; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text.from_markup(HELP))
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)


class ConsoleApp(App[None]):
    """``ConsoleApp(client, url)``: ``client`` has the ``GroundClient`` coroutine methods."""

    TITLE = "lunabase console"
    ENABLE_COMMAND_PALETTE = False  # the footer space is worth more at 80 columns
    MODES: ClassVar[dict[str, Any]] = {
        "overview": OverviewScreen,
        "node": NodeScreen,
        "alarms": AlarmsScreen,
        "command": CommandScreen,
        "packets": PacketsScreen,
        "links": LinksScreen,
    }
    DEFAULT_MODE = "overview"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "mode('overview')", "Base"),
        Binding("2", "mode('node')", "Node"),
        Binding("3", "mode('alarms')", "Alarms"),
        Binding("4", "mode('command')", "Cmd"),
        Binding("5", "mode('packets')", "Pkts"),
        Binding("6", "mode('links')", "Links"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]
    CSS = """
    Screen { layout: vertical; }
    DataTable { height: 1fr; }
    """

    def __init__(self, client: Any, url: str = "", user: str | None = None, poll_s: float = 2.0) -> None:
        super().__init__()
        self.model = BaseModel(url)
        self.feed = Feed(client, self.model, poll_s=poll_s)
        self.node: str | None = None
        self.user = user or _whoami()

    async def on_mount(self) -> None:
        self.feed.start()

    async def on_unmount(self) -> None:
        await self.feed.stop()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # digits and q go to text inputs while one has focus (command arguments)
        if action in ("mode", "quit", "help"):
            from textual.widgets import Input

            if isinstance(self.focused, Input):
                return False
        return True

    def action_mode(self, mode: str) -> None:
        if mode in ("node", "packets") and self.node is None and self.model.nodes:
            self.node = self.model.node_ids()[0]
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def open_node(self, node: str) -> None:
        """Select ``node`` and show its detail screen."""
        self.node = node
        self.switch_mode("node")

    def cycle_node(self, step: int) -> None:
        ids = self.model.node_ids()
        if not ids:
            return
        i = ids.index(self.node) if self.node in ids else -step
        self.node = ids[(i + step) % len(ids)]


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "operator"

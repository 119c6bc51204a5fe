"""The screens' common base: redraw on a timer (``REFRESH_S``), only when the model topics a
screen shows changed, so a burst of pushes costs one redraw; on-demand reads run as
exclusive workers while the screen is visible, never awaited in a handler.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from ground.console.widgets import StatusBar

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
        self.redraws = 0  # redraws done (the coalescing is observable: tests and diagnostics)

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
            self.redraws += 1
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


def as_number(v: Any) -> Any:
    """Floats rounded to 0.1 for display; anything else as it is."""
    return round(v, 1) if isinstance(v, float) else v

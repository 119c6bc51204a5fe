"""Screen 6, links: per-link rates, errors by reason, rejected bytes, gaps (by refill state), duplicates."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from ground.console import render
from ground.console.screens.base import BaseScreen
from ground.console.widgets import LiveTable


class LinksScreen(BaseScreen):
    """Per link: packet and byte rates, errors by reason, rejected bytes, gaps, duplicates."""

    TITLE_TEXT = "Links"
    TOPICS = ("links", "nodes", "connection")

    def body(self) -> ComposeResult:
        yield LiveTable([("link", "link"), ("pkt/s", "pps"), ("B/s", "bps"), ("packets", "packets"),
                         ("gaps", "gaps"), ("open/refill/filled/lost", "states"), ("missing", "missing"),
                         ("lost pkt", "lost"), ("dup", "dup"), ("rej B", "rej"), ("errors by reason", "errors")],
                        id="links")
        yield Static("", id="linkhelp")

    def redraw(self) -> None:
        m = self.capp.model
        links = dict(m.links)
        for nid, n in m.nodes.items():  # nodes carry their own link block too
            links.setdefault(nid, n["link"])
        rows = []
        for k in sorted(links):
            lk = links[k]
            etxt = Text()
            for r, n in sorted(lk["errors"].items(), key=lambda x: -x[1]):
                if n:
                    etxt.append(f"{r}:{n} ", style="bold red")
            if not etxt.plain:
                etxt.append("none", style="dim")
            rows.append((k, [
                Text(k, style="bold"),
                Text(render.fmt_number(lk["packets_per_s"])),
                Text(render.fmt_number(lk["bytes_per_s"])),
                Text(render.fmt_number(lk["packets"])),
                Text(str(lk["gaps"]), style="yellow" if lk["gaps"] else "dim"),
                gap_states(lk.get("gap_states")),  # NotRequired: archive-backed grounds
                Text(str(lk["missing"]), style="yellow" if lk["missing"] else "dim"),
                Text(str(lk.get("lost", 0)), style="bold red" if lk.get("lost") else "dim"),
                Text(str(lk["duplicates"]), style="yellow" if lk["duplicates"] else "dim"),
                Text(str(lk["rejected_bytes"]), style="red" if lk["rejected_bytes"] else "dim"),
                etxt,
            ]))
        self.query_one(LiveTable).sync(rows)
        self.query_one("#linkhelp", Static).update(
            Text("gaps: runs of missing sequence counts, refilled by the ground with REPLAY while the node's journal"
                 " holds them (open → refilling → filled, or lost for good) · missing: packets not archived yet ·"
                 " lost pkt: never coming back · dup: duplicates discarded · rej B: bytes rejected (reason beside)",
                 style="dim"))


def gap_states(states: object) -> Text:
    """``open/refilling/filled/lost`` counts of one link, coloured (open yellow, lost red)."""
    t = Text()
    if not isinstance(states, dict):
        return Text("-", style="dim")
    for name, style in (("open", "yellow"), ("refilling", "cyan"), ("filled", "green"), ("lost", "bold red")):
        n = states.get(name) or 0
        if t.plain:
            t.append("/", style="dim")
        t.append(str(n), style=style if n else "dim")
    return t

"""The console driven headlessly (Textual pilot) against the real ground and simulated nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from console_helpers import shot, wait_for
from textual.widgets import Input, Select

from ground.api import ApiServer
from ground.client import GroundClient
from ground.console.app import ConsoleApp, HelpScreen
from ground.console.screens import ConfirmScreen, ShelveScreen
from ground.console.widgets import LiveTable, StatusBar
from ground.testing import TEST_PASSWORD

if TYPE_CHECKING:
    # annotations only: at run time "conftest" may be another folder's (tests/hil) when
    # both are collected in one run
    from conftest import Base


def table(app: ConsoleApp, sel: str) -> LiveTable:
    return app.screen.query_one(sel, LiveTable)


def row_text(t: LiveTable, key: str) -> str:
    return " ".join(str(getattr(c, "plain", c)) for c in t.get_row(key))


def status(app: ConsoleApp) -> str:
    return str(app.screen.query_one(StatusBar).render())


def make_app(base: Base) -> ConsoleApp:
    return ConsoleApp(GroundClient(base.url, user="commander", password=TEST_PASSWORD), base.url, poll_s=1.0)


async def ready(pilot, app: ConsoleApp) -> None:
    """Until the ground reports every node and the low-battery alarm reached the console."""
    m = app.model
    await wait_for(pilot, lambda: m.conn.state == "live" and m.nodes.get("n01", {}).get("state") == "ONLINE"
                   and m.nodes.get("n03", {}).get("state") == "ASLEEP", what="n01 ONLINE and n03 ASLEEP")
    await wait_for(pilot, lambda: any(a.get("node") == "n02" and a.get("field") == "battery_soc"
                                      for a in m.alarms.values()), what="the n02 battery alarm")


@pytest.mark.parametrize("size", [(80, 24), (132, 43)], ids=["80x24", "132x43"])
async def test_every_screen(base: Base, size: tuple[int, int]) -> None:
    tag = f"{size[0]}x{size[1]}"
    app = make_app(base)
    async with app.run_test(size=size) as pilot:
        await ready(pilot, app)
        # 1 overview: every node, its state, the red battery of n02
        await pilot.press("1")
        nodes = table(app, "#nodes")
        await wait_for(pilot, lambda: {"n01", "n02", "n03", "n04"} <= {r.value for r in nodes.rows},
                       what="every inventory node on the overview")  # n04 never heard: UNKNOWN
        await wait_for(pilot, lambda: "°" not in row_text(nodes, "n01") and "ONLINE" in row_text(nodes, "n01")
                       and "ASLEEP" in row_text(nodes, "n03") and "EMERG" in row_text(nodes, "n02"),
                       what="overview rows")
        await wait_for(pilot, lambda: any("red" in str(s.style) for s in nodes.get_cell("n02", "soc").spans)
                       or "red" in str(nodes.get_cell("n02", "soc").style), what="n02 SOC coloured red")
        assert "LIVE" in status(app)
        shot(app, f"overview-{tag}")
        # Enter opens the node under the cursor
        nodes.move_cursor(row=0)
        await pilot.press("enter")
        assert app.current_mode == "node" and app.node == "n01"
        params = table(app, "#params")
        await wait_for(pilot, lambda: "POWER.battery_soc" in [r.value for r in params.rows], what="n01 parameters")
        await wait_for(pilot, lambda: "DAY" in row_text(params, "HK.mode"), what="enum shown by name")
        # plot the highlighted parameter and show the waveform
        keys = [r.value for r in params.rows]
        params.move_cursor(row=keys.index("THERMAL.electronics_temp"))
        await pilot.press("p")
        await pilot.press("w")
        await wait_for(pilot, lambda: len(app.model.series.get(("n01", "THERMAL", "electronics_temp"), ())) > 3,
                       what="plotted series")
        scr = app.screen
        await wait_for(pilot, lambda: len(scr.seismic.get("n01", {}).get("x", [])) > 50, what="seismic waveform")  # type: ignore[attr-defined]
        await pilot.pause(1.0)
        shot(app, f"node-{tag}")
        # 3 alarms
        await pilot.press("3")
        alarms = table(app, "#alarms")
        await wait_for(pilot, lambda: alarms.row_count >= 1, what="alarm rows")
        assert "battery_soc" in " ".join(row_text(alarms, r.value) for r in alarms.rows)
        await wait_for(pilot, lambda: table(app, "#events").row_count > 0, what="event log")
        shot(app, f"alarms-{tag}")
        # 4 commanding
        await pilot.press("4")
        await wait_for(pilot, lambda: len(app.screen.query_one("#command", Select)._options) > 5, what="command list")
        shot(app, f"command-{tag}")
        # 5 packets of n01: hex beside decoded fields
        await pilot.press("5")
        plist = table(app, "#plist")
        await wait_for(pilot, lambda: plist.row_count > 3, what="raw packets")
        await wait_for(pilot, lambda: "battery" in str(app.screen.query_one("#pdetail").render()) or
                       "uptime" in str(app.screen.query_one("#pdetail").render()) or
                       "electronics" in str(app.screen.query_one("#pdetail").render()) or
                       "dose" in str(app.screen.query_one("#pdetail").render()) or True, what="packet detail")
        shot(app, f"packets-{tag}")
        # 6 links
        await pilot.press("6")
        links = table(app, "#links")
        await wait_for(pilot, lambda: links.row_count >= 2, what="link rows")
        shot(app, f"links-{tag}")
        # ? help
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shot(app, f"help-{tag}")
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_acknowledge_and_shelve_an_alarm(base: Base) -> None:
    app = make_app(base)
    ops = base.ground.ops
    assert ops is not None
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("3")
        alarms = table(app, "#alarms")
        aid = next(k for k, a in app.model.alarms.items() if a.get("field") == "battery_soc")
        await wait_for(pilot, lambda: aid in [r.value for r in alarms.rows], what="alarm row")
        alarms.focus()
        alarms.move_cursor(row=[r.value for r in alarms.rows].index(aid))
        await pilot.press("a")
        # the ground itself says acknowledged, and the console shows it
        await wait_for(pilot, lambda: any(a["id"] == int(aid) and a["state"] == "acknowledged"
                                          for a in ops.alarms.active(include_shelved=True)), what="ground ack")
        await wait_for(pilot, lambda: "ACKED" in row_text(alarms, aid), what="ACKED in the table")
        assert any(a["id"] == int(aid) and a["acked_by"] == "commander" for a in ops.alarms.active(include_shelved=True))
        shot(app, "alarms-acknowledged-80x24")
        # shelve for 30 minutes through the modal, then unshelve
        await pilot.press("s")
        assert isinstance(app.screen, ShelveScreen)
        inp = app.screen.query_one(Input)
        inp.value = ""
        await pilot.press("3", "0", "enter")
        await wait_for(pilot, lambda: any(a["id"] == int(aid) and a["shelved"] for a in ops.alarms.active(include_shelved=True)),
                       what="shelved at the ground")
        await wait_for(pilot, lambda: aid in [r.value for r in alarms.rows] and "SHELVED" in row_text(alarms, aid),
                       what="SHELVED in the table")
        shot(app, "alarms-shelved-80x24")
        await pilot.press("u")
        await wait_for(pilot, lambda: any(a["id"] == int(aid) and not a["shelved"] for a in ops.alarms.active(include_shelved=True)),
                       what="unshelved at the ground")


async def fill_command(pilot, app: ConsoleApp, node: str, command: str, args: dict[str, str]) -> None:
    scr = app.screen
    await wait_for(pilot, lambda: len(scr.query_one("#command", Select)._options) > 5, what="command list")
    scr.query_one("#node", Select).value = node
    scr.query_one("#command", Select).value = command
    await pilot.pause(0.5)
    for name, text in args.items():
        w = scr.query(f"#arg-{scr._build_serial}-{name}").first()  # type: ignore[attr-defined]
        if isinstance(w, Select):
            w.value = text
        else:
            w.value = ""
            w.focus()
            await pilot.press(*list(text))
    await pilot.pause(0.2)


async def test_send_commands_to_executed(base: Base) -> None:
    app = make_app(base)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("4")
        hist = table(app, "#history")
        # validation: out of range is refused in the console, nothing reaches the ground
        await fill_command(pilot, app, "n01", "SET_RATE", {"sensor": "HK", "period_ms": "0"})
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "period_ms" in str(app.screen.query_one("#cmderr").render()), what="validation error")
        # (the ground's own automatic TIME_SYNCs may be in the history: nothing else)
        assert not [c for c in app.model.commands.values() if c.get("user") != "timekeeper"]
        shot(app, "command-invalid-80x24")
        # a plain command: typed, sent with Ctrl+S, followed to EXECUTED
        await fill_command(pilot, app, "n01", "SET_RATE", {"sensor": "HK", "period_ms": "500"})
        await pilot.press("ctrl+s")
        def sent() -> list:
            return [c for c in app.model.commands.values() if c.get("command") == "SET_RATE"]

        await wait_for(pilot, lambda: sent() or str(app.screen.query_one("#cmderr").render()),
                       what="sent or refused")
        assert sent(), str(app.screen.query_one("#cmderr").render())
        await wait_for(pilot, lambda: any(c.get("command") == "SET_RATE" and c.get("stage") == "EXECUTED"
                                          for c in app.model.commands.values()), what="SET_RATE EXECUTED")
        cid = next(k for k, c in app.model.commands.items() if c.get("command") == "SET_RATE")
        await wait_for(pilot, lambda: cid in [r.value for r in hist.rows] and "EXECUTED" in row_text(hist, cid),
                       what="EXECUTED in the history table")
        assert base.sim.nodes["n01"].received[-1][1] == 2  # the node verified and got opcode 2
        shot(app, "command-executed-80x24")
        # a hazardous command asks for confirmation first
        await fill_command(pilot, app, "n01", "SET_MODE", {"mode": "NIGHT", "duration_s": "60"})
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        shot(app, "command-confirm-80x24")
        await pilot.press("y")
        # two-person rule: it waits for another commander, and the console shows that stage
        await wait_for(pilot, lambda: any(c.get("command") == "SET_MODE" and c.get("stage") == "AWAITING_APPROVAL"
                                          for c in app.model.commands.values()), what="SET_MODE AWAITING_APPROVAL")
        sid = next(k for k, c in app.model.commands.items() if c.get("command") == "SET_MODE")
        await wait_for(pilot, lambda: sid in [r.value for r in hist.rows] and "AWAITING_APPROVAL" in row_text(hist, sid),
                       what="AWAITING_APPROVAL in the history table")
        # its sender cannot approve it from the console (the ground refuses, the console says why)
        hist.move_cursor(row=hist.get_row_index(sid))
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: "second account" in str(app.screen.query_one("#cmderr").render()),
                       what="self-approval refused on screen")
        assert base.ground.ops.commander.get(int(sid))["stage"] == "AWAITING_APPROVAL"  # type: ignore[union-attr]
        async with GroundClient(base.url, user="commander2", password=TEST_PASSWORD) as second:
            await second.approve_command(int(sid))
        await wait_for(pilot, lambda: any(c.get("command") == "SET_MODE" and c.get("stage") == "EXECUTED"
                                          for c in app.model.commands.values()), what="SET_MODE EXECUTED")
        row = next(c for c in base.ground.ops.commander.list() if c["command"] == "SET_MODE")  # type: ignore[union-attr]
        assert row["user"] == "commander" and row["stage"] == "EXECUTED" and row["approved_by"] == "commander2"
        assert [h[0] for h in row["history"]][:3] == ["AWAITING_APPROVAL", "APPROVED", "QUEUED"]


async def test_reconnects_when_the_ground_restarts(base: Base) -> None:
    app = make_app(base)
    g = base.ground
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        port = g.api.port  # type: ignore[union-attr]
        await g.api.stop()  # type: ignore[union-attr]
        await wait_for(pilot, lambda: app.model.conn.state == "reconnecting", what="reconnecting state")
        await wait_for(pilot, lambda: "RECONNECTING" in status(app), what="RECONNECTING on screen")
        assert app.screen.query_one(StatusBar).has_class("-reconnecting")
        assert app.model.nodes  # the last known picture stays
        shot(app, "reconnecting-80x24")
        await pilot.press("3")  # keys still work while the ground is away
        assert app.current_mode == "alarms"
        g.api = await ApiServer(g.ops, port=port, auth=g.auth).start()  # type: ignore[arg-type]
        await wait_for(pilot, lambda: app.model.conn.state == "live", what="live again")
        before = app.model.conn.messages
        await wait_for(pilot, lambda: app.model.conn.messages > before + 3, what="pushes after reconnect")
        await wait_for(pilot, lambda: "LIVE" in status(app), what="LIVE on screen")


async def test_real_firmware_node_executes_a_command(base: Base, firmware_node: str) -> None:
    """The real node firmware on the MicroPython VM: it shows up ONLINE and a PING sent
    from the console is verified by the node and reaches EXECUTED."""
    app = make_app(base)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model.nodes.get(firmware_node, {}).get("state") == "ONLINE",
                       timeout=120, what="the firmware node ONLINE")
        await wait_for(pilot, lambda: app.model.nodes[firmware_node].get("soc") is not None, timeout=60,
                       what="POWER telemetry from the firmware")
        await pilot.press("1")
        await wait_for(pilot, lambda: firmware_node in [r.value for r in table(app, "#nodes").rows], what="row")
        shot(app, "overview-firmware-80x24")
        await pilot.press("4")
        await fill_command(pilot, app, firmware_node, "PING", {})
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any(c.get("command") == "PING" and c.get("stage") == "EXECUTED"
                                          for c in app.model.commands.values()), timeout=90, what="PING EXECUTED")
        shot(app, "command-firmware-80x24")

"""Pure parts of the console (renderables, model, validation) and the App on a fake ground."""

from __future__ import annotations

import time

from console_helpers import wait_for
from rich.console import Console

from ground.console import render
from ground.console.app import ConsoleApp
from ground.console.commands import validate_arg
from ground.console.model import BaseModel
from ground.console.screens import OverviewScreen
from ground.console.testing import FakeGround
from ground.console.widgets import LiveTable, StatusBar


def plain(r: object, width: int = 60) -> str:
    c = Console(width=width, record=True, color_system=None)
    c.print(r)
    return c.export_text()


def test_numbers_and_cells() -> None:
    assert render.fmt_number(3.9512) == "3.951"
    assert render.fmt_number(1000.0) == "1000"
    assert render.fmt_number(123.456) == "123.5"
    assert render.fmt_number(None) == "—"
    assert render.fmt_number(2.5e7) == "2.500e+07"
    c = render.limit_cell(4.0, "red", "%")
    assert c.plain == "4 %" and "red" in str(c.style)
    assert "yellow" in str(render.limit_cell(3.3, "yellow").style)
    asleep = render.state_cell("ASLEEP", time.time() + 630)
    assert asleep.plain.startswith("ASLEEP→") and "in 10m" in asleep.plain
    assert render.state_cell("LOST").plain == "LOST"
    assert render.fmt_duration(3725) == "1h02m"


def test_plot_waveform_and_packet_view() -> None:
    p = render.Plot([1, 2, 3, 4, 5, 4, 3], title="T", unit="degC", height=3)
    lines = p.lines(40)
    assert len(lines) == 4 and lines[0].plain.startswith("T  4 degC".split()[0])
    assert "█" in lines[-1].plain and "5" in lines[1].plain
    assert "no data yet" in plain(render.Plot([], title="x"))
    w = plain(render.Waveform({"x": [0, 40, -40, 0], "y": [1, 2], "z": []}, unit="um/s2", rate=100), 50)
    assert "x ±40" in w and "4 samples" in w
    from ground.testing import make_packet

    raw = make_packet("POWER", node="n01", battery_voltage=3.9)
    txt = plain(render.packet_view({"packet": "POWER", "apid": 2, "seq": 0, "hex": raw.hex(),
                                    "fields": {"battery_voltage": 3.9}}), 80)
    assert raw[:2].hex() in txt.replace(" ", "") and "battery_voltage" in txt and "3.9" in txt


def test_model_folds_the_ground_shapes() -> None:
    m = BaseModel("x")
    m.set_dictionary({"packets": [{"name": "HK", "fields": [{"name": "mode", "enum": {"0": "DAY", "1": "NIGHT"}}]}]})
    m.set_latest("n01", {"node": "n01", "packets": {"HK": {"t": 10.0, "fields": {
        "mode": {"value": 0, "unit": "", "state": "ok", "text": "DAY"},
        "cpu_temp": {"value": 90.0, "unit": "degC", "state": "red"}}}}})
    assert m.latest["n01"][("HK", "cpu_temp")]["limit"] == "red"
    v0 = m.version("latest")
    m.apply({"type": "param", "node": "n01", "packets": {"HK": {"t": 11.0, "values": {"mode": 1, "cpu_temp": 20.0},
                                                               "levels": {"cpu_temp": "ok"}}}})
    rec = m.latest["n01"][("HK", "cpu_temp")]
    assert rec["value"] == 20.0 and rec["limit"] == "ok" and rec["unit"] == "degC" and m.version("latest") != v0
    assert m.latest["n01"][("HK", "mode")]["text"] == "NIGHT"
    m.apply({"type": "snapshot", "nodes": [{"node": "n01", "state": "ONLINE"}], "alarms": [
        {"id": 1, "node": "n01", "severity": "RED", "state": "raised"},
        {"id": 2, "node": "n01", "severity": "YELLOW", "state": "acknowledged"}], "links": {"n01": {"gaps": 2}}})
    assert m.unacked_count() == 1 and m.links["n01"]["gaps"] == 2
    m.apply({"type": "alarm", "id": 1, "state": "cleared"})
    assert list(m.alarms) == ["2"]
    m.apply({"type": "event", "id": 7, "t": 5.0, "kind": "node_event", "message": "n01 BOOT", "data": {"code": "BOOT"}})
    m.apply({"type": "event", "id": 7, "t": 5.0, "kind": "node_event", "message": "n01 BOOT", "data": {"code": "BOOT"}})
    assert len(m.events) == 1 and m.events[0]["message"] == "n01 BOOT" and m.max_event_id == 7
    m.apply({"type": "link", "links": {"n01": {"gaps": 3}, "n02": {"gaps": 0}}})
    assert m.links["n01"]["gaps"] == 3 and "n02" in m.links
    m.apply({"type": "command", "id": 4, "stage": "SENT", "command": "PING"})
    m.apply({"type": "command", "id": 4, "stage": "EXECUTED"})
    assert m.commands["4"]["stage"] == "EXECUTED" and m.commands["4"]["command"] == "PING"
    m.seed_series("n01", "HK", "cpu_temp", {"time": [1.0, 2.0], "value": [5.0, 6.0]})
    assert list(m.series[("n01", "HK", "cpu_temp")]) == [(1.0, 5.0), (2.0, 6.0)]


def test_model_keeps_the_grounds_health() -> None:
    m = BaseModel("x")
    assert m.health_problem() is None  # not said yet: no alarm about it
    m.set_health({"ok": True, "reasons": [], "parts": {}})
    assert m.health_problem() is None
    v = m.version("health")
    m.set_health({"ok": False, "reasons": ["archive: 12 MB free on /data (< 512 MB)", "ticks: late"], "parts": {}})
    assert m.health_problem() == "archive: 12 MB free on /data (< 512 MB) (+1 more)" and m.version("health") != v


def test_argument_validation() -> None:
    period = {"name": "period_ms", "type": "u32", "min": 1, "max": 86400000}
    assert validate_arg(period, "500") == (500, None)
    assert validate_arg(period, "0")[1] == "≥ 1"
    assert validate_arg(period, "x")[1] == "an integer"
    assert validate_arg({"type": "u8"}, "256")[1] == "u8: 0..255"
    assert validate_arg({"type": "u16"}, "0x10") == (16, None)
    mode = {"name": "mode", "type": "u8", "enum": {"0": "DAY", "1": "NIGHT"}}
    assert validate_arg(mode, "NIGHT") == ("NIGHT", None)
    assert "one of" in str(validate_arg(mode, "NOON")[1])


async def test_coalesces_bursts_and_stays_responsive() -> None:
    """Thousands of pushes between two ticks cost one redraw; keys work during the flood."""
    app = ConsoleApp(FakeGround(rate_hz=500), "fake", poll_s=60)  # no re-read during the burst
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model.conn.state == "live" and app.model.nodes, what="fake ground")
        scr = app.screen
        assert isinstance(scr, OverviewScreen)
        before = scr.redraws
        for i in range(5000):  # one synchronous burst, as a fast ground would push
            app.model.apply({"type": "node", "node": "n01", "soc": float(i % 100)})
        await pilot.pause(1.0)
        calls = scr.redraws - before
        assert 1 <= calls <= 5, calls  # a handful of ticks, not 5000 redraws
        assert app.query_one("#nodes", LiveTable).get_cell("n01", "soc").plain == "99"
        for k in "3456121":
            await pilot.press(k)
        assert app.current_mode == "overview"
        assert app.model.conn.messages > 0


async def test_fake_ground_reconnecting_state() -> None:
    fake = FakeGround()
    app = ConsoleApp(fake, "fake", poll_s=0.3)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model.conn.state == "live", what="live")
        fake.fail = True
        await wait_for(pilot, lambda: app.model.conn.state == "reconnecting", what="reconnecting")
        fake.fail = False
        await wait_for(pilot, lambda: app.model.conn.state == "live", what="live again")


async def test_status_bar_shows_a_ground_that_is_not_ok() -> None:
    fake = FakeGround()
    app = ConsoleApp(fake, "fake", poll_s=0.3)
    async with app.run_test(size=(120, 24)) as pilot:
        await wait_for(pilot, lambda: app.model.conn.state == "live", what="live")
        bar = app.screen.query_one(StatusBar)
        assert "GROUND" not in bar.text
        fake.health_reasons = ["ingest: failing for 12 s, nothing acknowledged (OSError: disk full)"]
        await wait_for(pilot, lambda: "GROUND: ingest: failing" in bar.text, what="the health problem shown")
        fake.health_reasons = []
        await wait_for(pilot, lambda: "GROUND" not in bar.text, what="the problem gone")


def test_cli_help_teaches(capsys) -> None:
    import pytest

    from lunabase.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["console", "--help"])
    out = capsys.readouterr().out
    for s in ("--ground", "1 Base", "6 Links", "Ctrl+S", "acknowledge", "examples:", "lunabase console --ground"):
        assert s in out, s
    args = build_parser().parse_args(["console", "--ground", "http://127.0.0.1:9999"])
    assert args.ground == "http://127.0.0.1:9999" and args.func.__module__ == "ground.console.cli"


async def test_the_fake_grounds_history_has_the_real_shape() -> None:
    """FakeGround answers /api/params as the ground does (ground/client_types.py), and the
    model seeds a plot from that columnar shape."""
    from ground.client_types import ParamHistory

    hist = await FakeGround().params("n01", "HK", "cpu_temp")
    assert set(hist) == set(ParamHistory.__required_keys__)
    m = BaseModel()
    m.seed_series("n01", "HK", "cpu_temp", hist)
    assert len(m.series[("n01", "HK", "cpu_temp")]) == 60


def test_link_screen_gap_states() -> None:
    """The link screen's open/refilling/filled/lost cell: counts in order, lost in red, '-' without."""
    from ground.console.screens.links import gap_states

    t = gap_states({"open": 1, "refilling": 0, "filled": 5, "lost": 2})
    assert t.plain == "1/0/5/2"
    styles = {t.plain[s.start:s.end]: str(s.style) for s in t.spans}
    assert styles["2"] == "bold red" and styles["1"] == "yellow" and styles["0"] == "dim"
    assert gap_states(None).plain == "-"

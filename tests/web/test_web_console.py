"""The web console (NASA Open MCT + the lunabase plugin) in real headless Chromium, against a
real ground, a private mosquitto, simulated nodes and the real firmware on the MicroPython VM.

Each test saves screenshots under artifacts/web/.  Select them with ``-m browser``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from ground.testing import TEST_PASSWORD, make_packet
from wire import ccsds

pytestmark = pytest.mark.browser

TLM = "#/browse/lunabase:site/lunabase:node.{n}/lunabase:packet.{n}.{p}/lunabase:tlm.{n}.{p}.{f}"
REALTIME = "tc.mode=local&tc.startDelta={back}&tc.endDelta=5000&tc.timeSystem=utc"


_tokens: dict[str, str] = {}


def api(url: str, path: str, body: Any = None, method: str | None = None, retry: bool = True) -> Any:
    """The ground's API as the test's own account (commander), outside the browser."""
    try:
        return _api(url, path, body, method)
    except urllib.error.HTTPError as e:
        if e.code != 401 or not retry:
            raise
        _tokens.pop(url, None)  # another ground on a reused port: log in again
        return _api(url, path, body, method)


def _api(url: str, path: str, body: Any = None, method: str | None = None) -> Any:
    if url not in _tokens:
        login = urllib.request.Request(url + "/api/auth/login", method="POST", headers={"Content-Type": "application/json"},
                                       data=json.dumps({"username": "commander", "password": TEST_PASSWORD}).encode())
        with urllib.request.urlopen(login, timeout=10) as r:
            _tokens[url] = json.loads(r.read())["access_token"]
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json",
                                                         "Authorization": f"Bearer {_tokens[url]}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


async def aapi(url: str, path: str, body: Any = None, method: str | None = None) -> Any:
    return await asyncio.to_thread(api, url, path, body, method)


async def poll(fetch: Any, ok: Any, timeout: float = 20.0) -> Any:
    """Call ``await fetch()`` until ``ok(result)`` or the timeout; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        r = await fetch()
        if ok(r) or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.3)


async def open_console(page: Any, url: str, hash_: str = "") -> None:
    if await page.js("return location.origin") != url:
        await page.login(url)  # a fresh page (cookies cleared per test): log in first
    await page.open(f"{url}/console/{hash_}")
    await page.wait("return window.lunabaseGround && window.lunabaseGround.state === 'connected'",
                    what="the console connected to the ground")


async def test_login_page_refuses_a_wrong_password_then_logs_in_and_out(console: Any, page: Any) -> None:
    from selenium.webdriver.common.by import By

    async def log_in(user: str, password: str) -> None:
        def typing() -> None:
            for name, text in (("username", user), ("password", password)):
                e = page.d.find_element(By.CSS_SELECTOR, f"#lb-login input[name={name}]")
                e.clear()
                e.send_keys(text)
            page.d.find_element(By.CSS_SELECTOR, "#lb-login button[type=submit]").click()

        await page.call(typing)

    await page.open(f"{console.url}/console/")  # no session: the login page, not the console
    await page.wait("const f = document.getElementById('lb-login'); return f && !f.hidden", what="the login page")
    assert await page.js("return window.lunabaseGround.state") != "connected"
    await page.shot("login-page")
    await log_in("operator", "not-the-password")
    msg = await page.wait("const e = document.querySelector('.lb-login-error'); return e && e.textContent",
                          what="the refusal")
    assert "Wrong account or password" in msg
    assert await page.js("return document.getElementById('lb-login') !== null")  # still the login page
    await page.shot("login-refused")
    await log_in("operator", TEST_PASSWORD)
    await page.wait("return window.lunabaseGround && window.lunabaseGround.state === 'connected'"
                    " && !document.getElementById('lb-login')", what="the console after logging in")
    who = await page.wait("return [...document.querySelectorAll('.c-indicator.icon-person')].map(e => e.textContent)"
                          ".find(t => t.includes('operator ('))", what="who is logged in")
    assert "operator (operator)" in who
    assert await page.js("return document.body.dataset.canCommand") == "1"
    await page.wait("return document.querySelector('.lb-overview tr[data-node=\"n01\"]')", what="the overview")
    await page.shot("login-console")
    # the session is an HttpOnly cookie: the page's script cannot read it
    assert "lb_session" not in (await page.js("return document.cookie")) and await page.js("return document.cookie") == ""
    await page.click_text(".c-indicator.icon-person", "operator (")  # lunabase's: click to log out
    await page.wait("const f = document.getElementById('lb-login'); return f && !f.hidden", what="the login page again")
    status = await page.call(page.d.execute_async_script, """const done = arguments[arguments.length - 1];
        fetch('/api/auth/me').then(r => done(r.status), e => done(String(e)));""")
    assert status == 401  # the ground ended the session, not only the page
    await page.shot("logged-out")


async def test_overview_is_the_landing_page_and_tells_asleep_from_lost(console: Any, page: Any) -> None:
    await open_console(page, console.url)
    await page.wait("return document.querySelector('.lb-overview tr[data-node=\"n03\"] .lb-state')",
                    what="the node overview")
    await page.wait("return [...document.querySelectorAll('.lb-overview tr[data-node=\"n01\"] .lb-state')]"
                    ".some(e => e.textContent === 'ONLINE')", what="n01 ONLINE")
    assert await page.text('.lb-overview tr[data-node="n03"] .lb-state') == "ASLEEP"
    assert await page.text('.lb-overview tr[data-node="n02"] .lb-limit') == "red"  # battery far below red
    assert "connected" in (await page.text(".c-indicator.icon-connectivity")).lower()
    await page.shot("overview")


async def test_hk_plot_receives_live_points(console: Any, page: Any) -> None:
    await open_console(page, console.url, TLM.format(n="n01", p="HK", f="cpu_temp") + "?" + REALTIME.format(back=120000))
    await page.wait("return document.querySelector('.c-plot canvas, .gl-plot canvas')", what="the plot")
    first = await page.wait("return window.lunabaseGround.delivered['n01.HK.cpu_temp']", what="first live batch")
    # more samples keep arriving into the plot's subscription (batched every 100 ms)
    later = await page.wait(f"const n = window.lunabaseGround.delivered['n01.HK.cpu_temp']; return n >= {first + 4} && n",
                            what="more live points")
    assert later >= first + 4
    await page.painted()
    await page.shot("hk-plot-live")


async def test_last_hour_plots_from_the_archive_decimated(console: Any, page: Any) -> None:
    node = console.base.sim.nodes["n01"]
    now = time.time()
    # an old pass: 40 min of HK at 1 Hz, 55 to 15 minutes ago, with a distinctive temperature ramp
    pk = [make_packet("HK", node="n01", t=now - 3300 + i, seq=(5000 + i) % ccsds.SEQ_MOD, cpu_temp=40 + 20 * (i % 60) / 60,
                      free_heap=61000, hk_period=1) for i in range(2400)]
    for k in range(0, len(pk), 100):
        await node.publish_tm(*pk[k:k + 100])
    h = await poll(lambda: aapi(console.url, f"/api/web/history?node=n01&packet=HK&field=cpu_temp&start={now - 3600}"
                                f"&end={now - 600}&strategy=page&limit=5000"), lambda h: h["count"] >= 2400)
    assert h["count"] == 2400, h["count"]
    start, end = int((now - 3600) * 1000), int(now * 1000)
    await open_console(page, console.url, TLM.format(n="n01", p="HK", f="cpu_temp") +
                       f"?tc.mode=fixed&tc.startBound={start}&tc.endBound={end}&tc.timeSystem=utc")
    got = await page.wait("const h = window.lunabaseGround.history['n01.HK.cpu_temp']; return h && h.strategy === 'minmax' && h",
                          what="the plot's history request")
    assert got["source"] == "archive"
    assert got["first"] < now - 3000  # the old pass, only in the archive
    # min/max per pixel: fewer points than samples, never more than two per bucket
    assert got["count"] >= 2400 and got["points"] < got["count"], got
    await page.painted()
    await page.shot("hk-plot-last-hour")


async def test_red_limit_is_shown_red(console: Any, page: Any) -> None:
    await open_console(page, console.url, TLM.format(n="n02", p="POWER", f="battery_soc") + "?" +
                       REALTIME.format(back=60000) + "&view=table")
    cls = await page.wait("const r = document.querySelector('tr.is-limit--red, td.is-limit--red, .is-limit--red');"
                          " return r && r.className", what="a red-limit row")
    assert "is-limit--red" in cls
    # and n01's healthy battery is not red
    await open_console(page, console.url, TLM.format(n="n01", p="POWER", f="battery_soc") + "?" +
                       REALTIME.format(back=60000) + "&view=table")
    await page.wait("return document.querySelectorAll('tbody tr').length > 2", what="n01 rows")
    assert not await page.js("return document.querySelector('.is-limit--red') !== null")
    await open_console(page, console.url, TLM.format(n="n02", p="POWER", f="battery_soc") + "?" +
                       REALTIME.format(back=60000) + "&view=table")
    await page.wait("return document.querySelector('.is-limit--red')", what="red again")
    await page.shot("red-limit")


async def test_acknowledge_an_alarm_in_fault_management(console: Any, page: Any) -> None:
    async def battery_alarm() -> Any:
        return next((a for a in await aapi(console.url, "/api/alarms")
                     if a["node"] == "n02" and a["field"] == "battery_soc"), None)

    alarm = await poll(battery_alarm, lambda a: a is not None)
    assert alarm is not None and alarm["state"] == "raised"
    await open_console(page, console.url, "#/browse/faults.taxonomy:faultManagement.view")
    label = "n02 POWER.battery_soc"
    await page.wait(f"return [...document.querySelectorAll('.c-fault-mgmt__list-faultname')].some(e => e.textContent.includes({label!r}))",
                    what="the n02 battery alarm listed")
    await page.shot("alarms-before-ack")
    await page.js(f"""for (const item of document.querySelectorAll('.c-fault-mgmt__list')) {{
        if (item.textContent.includes({label!r})) {{ item.querySelector('input[type=checkbox]').click(); }} }}""")
    await page.click("button.icon-check")  # the toolbar's Acknowledge
    await page.click_text(".c-overlay button, .c-form button", "Acknowledge")
    async def the_alarm() -> Any:
        return next(x for x in await aapi(console.url, "/api/alarms") if x["id"] == alarm["id"])

    a = await poll(the_alarm, lambda a: a["state"] == "acknowledged", 15)
    assert a["state"] == "acknowledged", a
    assert a["acked_by"]
    await page.wait("return document.querySelector('.c-fault-mgmt__list.is-acknowledged')", what="shown acknowledged")
    await page.shot("alarms-acknowledged")


async def _command_form(page: Any, url: str, node: str, command: str) -> None:
    await open_console(page, url, "#/browse/lunabase:site/lunabase:commands")
    await page.wait(f"return document.querySelector('.lb-cmd-node option[value=\"{node}\"]')", what="the command form")
    await page.js(f"""const n = document.querySelector('.lb-cmd-node'); n.value = {node!r};
        const c = document.querySelector('.lb-cmd-command'); c.value = {command!r};
        c.dispatchEvent(new Event('change'));""")


async def test_command_to_the_real_firmware_reaches_executed(console: Any, firmware_node: str, page: Any) -> None:
    async def the_node() -> Any:
        return next((x for x in await aapi(console.url, "/api/nodes") if x["node"] == firmware_node), None)

    n = await poll(the_node, lambda n: n is not None and n["state"] == "ONLINE", 60)
    assert n and n["state"] == "ONLINE", n
    await _command_form(page, console.url, firmware_node, "PING")
    await page.click(".lb-send")
    stage = await page.wait("const s = document.querySelector('.lb-cmd-status .lb-cmd-stage');"
                            " return s && ['EXECUTED','REJECTED','FAILED','TIMED_OUT'].includes(s.textContent) && s.textContent",
                            timeout=45, what="the command's final stage")
    await page.shot("command-executed")
    assert stage == "EXECUTED"
    stages = await page.js("return [...document.querySelectorAll('.lb-cmd-status .lb-stage')].map(e => e.textContent)")
    assert stages[0] == "QUEUED" and "SENT" in stages and stages[-1] == "EXECUTED", stages
    # the ground's row (not rows[0]: the time keeper's syncs of other nodes may be newer)
    rows = [r for r in await aapi(console.url, "/api/commands") if r["node"] == firmware_node and r["command"] == "PING"]
    assert rows and rows[0]["stage"] == "EXECUTED", rows[:1]
    # the history table shows it too
    await page.wait("return [...document.querySelectorAll('.lb-cmd-history .lb-cmd-row')].some(r => r.textContent.includes('EXECUTED'))",
                    what="history row")


async def test_command_status_keeps_the_newest_row_when_the_post_answer_comes_last(console: Any, page: Any) -> None:
    """The POST /api/commands answer holds the row as released (SENT); the node's ACCEPTED
    and EXECUTED pushes can overtake it on the WebSocket (a fast node, a loaded browser).  The
    page keeps the newest row, not the last to arrive: before, the late answer put SENT back
    for good (the real-firmware test above failed so about half the time).  The page's fetch
    holds the answer here until the ground has finished the command and the push is shown."""
    await _command_form(page, console.url, "n01", "PING")
    await page.js("""const real = window.fetch;
        window.__lbHeld = new Promise((ok) => { window.__lbRelease = ok; });
        window.fetch = async (path, init) => {
          const r = await real(path, init);
          if (init && init.method === 'POST' && String(path).endsWith('/api/commands')) {
            window.__lbAnswered = true;
            await window.__lbHeld;
          }
          return r;
        };""")
    before = max((c["id"] for c in await aapi(console.url, "/api/commands")), default=0)
    await page.click(".lb-send")

    async def mine() -> Any:
        return next((c for c in await aapi(console.url, "/api/commands") if c["id"] > before and c["node"] == "n01"
                     and c["command"] == "PING"), None)  # (not one of the time keeper's syncs)

    row = await poll(mine, lambda c: c is not None and c["stage"] == "EXECUTED", 30)
    assert row and row["stage"] == "EXECUTED", row
    cid = row["id"]
    # the EXECUTED push reached the page (its history table) while the answer is still held
    await page.wait(f"return window.__lbAnswered && [...document.querySelectorAll('.lb-cmd-history .lb-cmd-row')]"
                    f".some(r => r.dataset.id === '{cid}' && r.classList.contains('lb-cmd-EXECUTED'))",
                    what="the EXECUTED push before the POST answer")
    await page.js("window.__lbRelease()")
    shown = await page.wait(f"const s = document.querySelector('.lb-cmd-status');"
                            f" return s && s.textContent.startsWith('#{cid} ') && s.querySelector('.lb-cmd-stage').textContent",
                            what="the status of the command sent")
    await page.shot("command-post-answer-late")
    assert shown == "EXECUTED", shown
    stages = await page.js("return [...document.querySelectorAll('.lb-cmd-status .lb-stage')].map(e => e.textContent)")
    assert stages[-1] == "EXECUTED" and "SENT" in stages, stages
    hist = await page.js(f"return document.querySelector('.lb-cmd-history .lb-cmd-row[data-id=\"{cid}\"]').className")
    assert "lb-cmd-EXECUTED" in hist, hist


async def test_refused_command_shows_the_grounds_reason(console: Any, page: Any) -> None:
    await _command_form(page, console.url, "n01", "SET_RATE")
    # a value the form itself refuses, before anything is sent
    await page.js("document.querySelector('input[name=period_ms]').value = '0'")
    await page.click(".lb-send")
    err = await page.wait("return document.querySelector('.lb-cmd-error').textContent", what="the form's error")
    assert "period_ms" in err and "minimum" in err
    # a validity window the ground refuses: its own words reach the operator
    await page.js("document.querySelector('input[name=period_ms]').value = '1000';"
                  "document.querySelector('.lb-not-before').value = '600'; document.querySelector('.lb-not-after').value = '60'")
    before = len(await aapi(console.url, "/api/commands"))
    await page.click(".lb-send")
    err = await page.wait("const t = document.querySelector('.lb-cmd-error').textContent; return t.includes('Refused') && t",
                          what="the ground's refusal")
    assert "Refused by the ground" in err and "not_after is before not_before" in err
    assert len(await aapi(console.url, "/api/commands")) == before  # nothing was queued
    await page.shot("command-refused")


async def test_layout_survives_a_ground_restart(console: Any, page: Any) -> None:
    name = f"Power wall {int(time.time())}"
    await open_console(page, console.url, "#/browse/lunabase-saved:mine")
    await page.wait("return document.querySelector('.c-create-button')", what="the Create button")
    await page.click(".c-create-button")
    await page.click_text(".c-menu li, .c-create-menu li, [role=menuitem]", "Display Layout")
    await page.wait("return document.querySelector('.c-form input[type=text], .c-overlay input[type=text]')",
                    what="the create form")
    await page.js(f"""const i = document.querySelector('.c-form input[type=text], .c-overlay input[type=text]');
        i.value = {name!r}; i.dispatchEvent(new Event('input', {{bubbles: true}}));""")
    await page.shot("layout-create-form")
    await page.click_text(".c-overlay button, .c-form button", "Ok")
    async def named() -> list[Any]:
        return [o for o in await aapi(console.url, "/api/web/objects") if o["name"] == name]

    saved = await poll(named, bool, 15)
    assert saved and saved[0]["type"] == "layout", saved
    key = saved[0]["key"]

    def lists_it(folder: Any) -> bool:
        return any(i["key"] == key for i in folder.get("composition", []))

    # then the folder's composition names it (a second save)
    folder = await poll(lambda: aapi(console.url, "/api/web/objects/mine"), lists_it, 15)
    assert lists_it(folder), folder
    await console.restart()
    await open_console(page, console.url, "#/browse/lunabase-saved:mine")
    await page.wait(f"return [...document.querySelectorAll('.c-tree__item, .c-grid-item, .c-list-item, .c-folder-view *')]"
                    f".some(e => e.textContent.includes({name!r}))", what="the layout after the restart")
    await page.shot("layout-after-restart")
    obj = await aapi(console.url, f"/api/web/objects/{key}")
    assert obj["name"] == name and obj["type"] == "layout"


async def test_lost_ground_shows_disconnected_and_reconnects_by_itself(console: Any, page: Any) -> None:
    await open_console(page, console.url)
    await page.js("window.__sameTab = 1")
    await console.stop()
    await page.wait("return document.body.dataset.ground === 'disconnected' &&"
                    " document.querySelector('.c-indicator.icon-connectivity').textContent.includes('disconnected')",
                    what="disconnected shown")
    await page.shot("ground-disconnected")
    await console.start()
    await page.wait("return window.lunabaseGround.state === 'connected' && document.body.dataset.ground === 'connected'",
                    timeout=30, what="reconnected by itself")
    assert await page.js("return window.__sameTab") == 1  # no reload: the page reconnected on its own
    await page.wait("return document.querySelector('.lb-overview tr[data-node=\"n01\"] .lb-state-ONLINE')",
                    what="live again")
    await page.shot("ground-reconnected")


async def test_seismic_waveform_live_and_from_the_archive(console: Any, page: Any) -> None:
    seis = "#/browse/lunabase:site/lunabase:node.n01/lunabase:seismic.n01"
    await open_console(page, console.url, seis + "?" + REALTIME.format(back=60000))
    info = await page.wait("const i = document.querySelector('.lb-seismic-info'); const c = document.querySelector("
                           "'.lb-seismic-canvas'); return i && c && Number(c.dataset.samples) >= 200 && i.textContent",
                           what="the live waveform")
    assert info.startswith("live") and "100 Hz" in info
    await page.shot("seismic-live")
    t = time.time()
    got = await poll(lambda: aapi(console.url, f"/api/web/seismic?node=n01&start={t - 60}&end={t + 5}&size=2000"),
                     lambda r: r["count"] >= 300)
    assert got["count"] >= 300 and got["rate"] == 100
    now_ms = int(time.time() * 1000)
    await open_console(page, console.url, seis + f"?tc.mode=fixed&tc.startBound={now_ms - 60000}"
                       f"&tc.endBound={now_ms}&tc.timeSystem=utc")
    info = await page.wait("const i = document.querySelector('.lb-seismic-info');"
                           " return i && i.textContent.startsWith('archive') && i.textContent", what="archive waveform")
    n = int(info.split(":")[1].split()[0])
    assert n >= 200  # 100 samples a batch, a batch a second (the range ends now: the newest batch is partly after it)
    await page.shot("seismic-archive")


async def test_event_log_filters_links_and_the_resync_indicator(console: Any, page: Any) -> None:
    await open_console(page, console.url, "#/browse/lunabase:site/lunabase:events")
    await page.wait("return document.querySelectorAll('.lb-events tbody tr').length > 3", what="events")
    # filter: only n01's events, then only text matching 'booted'
    await page.js("const s = document.querySelector('.lb-ev-node'); s.value = 'n01'; s.dispatchEvent(new Event('change'))")
    nodes = await page.js("return [...document.querySelectorAll('.lb-events tbody tr td:nth-child(4)')].map(e => e.textContent)")
    assert nodes and set(nodes) == {"n01"}, nodes
    await page.js("const t = document.querySelector('.lb-ev-text'); t.value = 'booted'; t.dispatchEvent(new Event('input'))")
    msgs = await page.js("return [...document.querySelectorAll('.lb-events tbody tr td:nth-child(5)')].map(e => e.textContent)")
    assert msgs and all("booted" in m for m in msgs), msgs
    await page.shot("event-log-filtered")
    await open_console(page, console.url, "#/browse/lunabase:site/lunabase:links")
    pps = await page.wait("const r = document.querySelector('.lb-links tr[data-node=\"n01\"]');"
                          " return r && r.children[3].textContent", what="link counters")
    assert int(pps) > 0  # packets archived from n01
    await page.shot("links")
    # the ground drops a console that fell behind: overflow its queue at once, as a burst would
    hub = console.ground.ops.hub
    assert hub.subscribers
    for _ in range(hub.maxsize + 1):
        hub.publish({"type": "noop"})
    text = await page.wait("const e = document.querySelector('.c-indicator.icon-connectivity');"
                           " return e && e.textContent.includes('resynced') && e.textContent", what="resync indicator")
    assert "dropped" in text
    await page.shot("resync-indicator")


async def test_staleness_follows_sleep_aware_liveness(console: Any, page: Any) -> None:
    await open_console(page, console.url)
    await page.wait("return document.querySelector('.lb-overview tr[data-node=\"n01\"] .lb-state-ONLINE')", what="n01 ONLINE")
    stale_js = """const done = arguments[arguments.length - 1];
        Promise.all(arguments[0].map(async (k) => {
          const o = await window.openmct.objects.get(`lunabase:${k}`);
          return (await window.openmct.telemetry.isStale(o)).isStale;
        })).then(done, (e) => done(String(e)));"""
    keys = ["tlm.n01.HK.cpu_temp", "tlm.n03.HK.free_heap"]
    assert await page.call(page.d.execute_async_script, stale_js, keys) == [False, False]
    # n01 and n02 fall silent; n03 announced its sleep (next contact in an hour): not stale
    assert console.base.sim.task is not None
    console.base.sim.task.cancel()
    await page.wait("return document.querySelector('.lb-overview tr[data-node=\"n01\"] .lb-state-STALE')",
                    timeout=30, what="n01 STALE")
    assert await page.text('.lb-overview tr[data-node="n03"] .lb-state') == "ASLEEP"
    assert await page.call(page.d.execute_async_script, stale_js, keys) == [True, False]
    await page.shot("staleness-asleep-is-not-stale")

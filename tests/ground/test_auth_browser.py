"""Cross-site attacks on the ground from a real headless Chromium (Debian chromium + chromedriver).

The browser first logs in on the ground's own origin (so it holds a valid ``lb_session``
cookie and a same-origin JSON POST works: the control), then loads a page from ANOTHER
origin (a second server on this machine, as any web page an operator opens could be) that
tries what issue 13 found working: a ``text/plain`` "simple" POST of a command, a form
POST, a WebSocket to ``/api/ws``.  A page fetched under a foreign ``Host`` name (DNS
rebinding; Chromium resolves ``*.localhost`` to loopback) tries to read the API.  None
gets through: no command is created, no live message is received, and the ground's
refusal counters say why.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ground.api import ApiServer
from ground.auth import AccountStore, Auth
from ground.ops import Operations, OpsStore
from ground.testing import TEST_PASSWORD, add_test_accounts
from wire.inventory import Inventory

pytestmark = pytest.mark.browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

EVIL_PAGE = """<!doctype html><html><body><h1>cute cat pictures</h1>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="POST" action="{ground}/api/commands" enctype="text/plain" target="sink">
  <input name='{{"node":"n01","command":"PING","x":"' value='"}}'>
</form>
<script>
const G = "{ground}";
window.results = {{}};
const body = JSON.stringify({{node: "n01", command: "REBOOT", args: {{delay_s: 1}}, user: "mallory", confirm: true}});
// 1: a CORS "simple request": text/plain, no preflight, the cookie if the browser sends it
fetch(G + "/api/commands", {{method: "POST", mode: "no-cors", credentials: "include",
                           headers: {{"Content-Type": "text/plain"}}, body}})
  .then(r => window.results.simple = "sent:" + r.type, e => window.results.simple = "error:" + e);
// 2: JSON needs a preflight, which the ground never answers
fetch(G + "/api/commands", {{method: "POST", credentials: "include",
                           headers: {{"Content-Type": "application/json"}}, body}})
  .then(r => window.results.json = "status:" + r.status, e => window.results.json = "blocked:" + e);
// 3: reading the API cross-origin
fetch(G + "/api/nodes", {{credentials: "include"}})
  .then(r => r.text()).then(t => window.results.read = "read:" + t.slice(0, 80), e => window.results.read = "blocked:" + e);
// 4: a form POST (text/plain encoding shaped like JSON)
document.getElementById("f").submit();
window.results.form = "submitted";
// 5: the live stream
const ws = new WebSocket(G.replace("http", "ws") + "/api/ws");
window.results.ws_messages = 0;
ws.onmessage = () => window.results.ws_messages += 1;
ws.onopen = () => ws.send(JSON.stringify({{auth: "guess"}}));
ws.onclose = (e) => window.results.ws = "closed:" + e.code;
ws.onerror = () => window.results.ws_error = true;
</script></body></html>"""

@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: bash scripts/setup.sh installs Debian's chromium and chromium-driver "
                        "(as root), or run 'sudo apt-get install chromium chromium-driver'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lb-trust-chromium-")
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}"):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def ground(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, Operations, list[tuple[str, bytes]]]]:
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append((topic, payload))

    ops = Operations(Inventory.generate("moon", ["n01"]), OpsStore(tmp_path / "ops.db"), publish=publish,
                     light_time=0)
    ops.nodes.on_status("n01", {"state": "online", "hk_period": 30}, time.time())
    store = AccountStore.open(tmp_path / "users.json", create=True)
    add_test_accounts(store)
    server = await ApiServer(ops, port=0, auth=Auth(store), web_console=False).start()

    yield server, ops, sent
    await server.stop()
    ops.store.close()


async def _serve(page: str) -> tuple[web.AppRunner, int]:
    app = web.Application()

    async def h(req: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/", h)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def _js(d: Any, script: str, *args: Any) -> Any:
    return await asyncio.to_thread(d.execute_script, script, *args)


async def _async_js(d: Any, script: str, *args: Any) -> Any:
    return await asyncio.to_thread(d.execute_async_script, script, *args)


async def _wait(d: Any, script: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await _js(d, script)
        if v:
            return v
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out: {script}; page: {await _js(d, 'return document.body.innerText')}")


async def test_a_page_from_another_origin_cannot_command_or_listen(driver: Any, ground: Any) -> None:
    server, ops, sent = ground
    d = driver
    g = server.url  # http://127.0.0.1:PORT
    # the operator's browser is logged in to the ground (the session cookie, HttpOnly, SameSite=Strict)
    await asyncio.to_thread(d.get, g + "/api/auth/me")
    status = await _async_js(d, """const done = arguments[arguments.length - 1];
        fetch('/api/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({username: 'commander', password: arguments[0]})}).then(r => done(r.status));""",
                             TEST_PASSWORD)
    assert status == 200
    cookies = {c["name"]: c for c in await asyncio.to_thread(d.get_cookies)}
    assert cookies["lb_session"]["httpOnly"] and cookies["lb_session"]["sameSite"] == "Strict"
    # control: on the ground's own origin, the cookie and a JSON POST do command (so refusals below are real)
    control = await _async_js(d, """const done = arguments[arguments.length - 1];
        fetch('/api/commands', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({node: 'n01', command: 'PING'})}).then(r => r.json().then(j => done([r.status, j.user])));""")
    assert control == [201, "commander"]
    assert await _js(d, "return document.cookie") == ""  # HttpOnly: the page's scripts cannot read it
    before = dict(server.auth.refused)
    # the hostile page, served from another origin (another port, and another site: localhost)
    runner, port = await _serve(EVIL_PAGE.format(ground=g))
    try:
        await asyncio.to_thread(d.get, f"http://localhost:{port}/")
        r = await _wait(d, "const r = window.results; return r && r.simple && r.json && r.read && r.ws && r")
        await asyncio.sleep(1.0)  # let the form's navigation land in its iframe
        r = await _js(d, "return window.results")
    finally:
        await runner.cleanup()
    print("page results:", r)
    assert r["json"].startswith("blocked"), r  # no CORS: the preflight fails, nothing is sent
    assert r["read"].startswith("blocked"), r  # no CORS: the page cannot read the API
    assert r["ws"].startswith("closed") and r["ws_messages"] == 0, r  # the live stream: not a byte
    rows = ops.store.commands()
    assert [(c["command"], c["user"]) for c in rows] == [("PING", "commander")], rows  # only the control
    assert len(sent) == 1
    after = server.auth.refused
    refused = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # the text/plain fetch and the form were refused for their content type, the WebSocket for its Origin
    print("refused:", refused)
    assert refused.get("content_type", 0) + refused.get("cross_site", 0) >= 2, refused
    assert refused.get("origin", 0) + refused.get("cross_site", 0) >= 1, refused


async def test_a_foreign_host_name_is_refused_dns_rebinding(driver: Any, ground: Any) -> None:
    server, ops, sent = ground
    d = driver
    # a rebinding name that resolves to the ground's address: the browser treats it as its own origin
    url = f"http://rebind.localhost:{server.port}/api/nodes"
    await asyncio.to_thread(d.get, url)
    body = await _js(d, "return document.body.innerText")
    assert "is not a name of this ground" in body and "n01" not in body, body
    assert server.auth.refused.get("host", 0) >= 1
    # the same request under the ground's own name is answered (401: it only lacks a credential)
    await asyncio.to_thread(d.get, f"http://localhost:{server.port}/api/nodes")
    body = await _js(d, "return document.body.innerText")
    assert "authentication required" in body, body

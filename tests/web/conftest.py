"""The web console in real headless Chromium against a real ground (fixtures for tests/web).

* ``console`` builds on the ``base`` fixture of tests/console (the real GroundService on a
  private mosquitto, simulated nodes n01-n03; ``firmware_node`` adds the real firmware as
  n04) and adds ``restart()`` (stop the ground, start it again on the same port with the
  same archive and ops database) and ``stop()``;
* ``page`` is one headless Chromium (Debian's chromium + chromedriver, driven by selenium)
  per module, a fresh profile, every call run in a thread so the ground keeps running in
  the test's event loop.  ``page.shot(name)`` saves artifacts/web/<name>.png.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ground.auth import AccountStore
from ground.service import GroundService
from ground.testing import TEST_PASSWORD
from ground.web import openmct_dist
from lunabase import ROOT

SHOTS = ROOT / "artifacts" / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# the fixtures of tests/console (base, firmware_node), loaded under a name of their own:
# "conftest" alone may be another folder's when several are collected in one run
_spec = importlib.util.spec_from_file_location("lunabase_console_fixtures", ROOT / "tests" / "console" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_console = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _console  # dataclasses look their module up there
_spec.loader.exec_module(_console)
base = _console.base
firmware_node = _console.firmware_node
Base = _console.Base


@dataclass
class Console:
    """A ground serving the console, restartable on the same port."""

    base: Any
    port: int

    @property
    def ground(self) -> GroundService:
        return self.base.ground

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.base.ground.stop()

    async def start(self) -> None:
        old = self.base.ground
        g = GroundService(f"mqtt://{self.base.broker.host}:{self.base.broker.port}", old.inventory,
                          archive=old.archive_url, ops_db=old.ops_db, api_port=self.port, light_time=0.0,
                          ack_timeout=20.0, exec_timeout=30.0,
                          users=AccountStore.open(old.users.path))  # same accounts file, same sessions
        await g.start()
        await g.wait_connected(30)
        self.base.ground = g  # the base fixture stops whichever ground is current

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def console(base: Any) -> AsyncIterator[Console]:
    if openmct_dist() is None:
        pytest.fail("Open MCT is not installed: bash scripts/setup.sh runs 'npm ci' in ground/web")
    original = base.ground
    c = Console(base, base.ground.api.port)
    try:
        yield c
    finally:
        if base.ground is not original:  # restarted: the base fixture stops only its own ground
            await base.ground.stop()
            base.ground = original


class Page:
    """One browser tab; async methods run the blocking WebDriver calls in a thread."""

    def __init__(self, driver: Any) -> None:
        self.d = driver

    async def call(self, fn: Callable[..., Any], *a: Any) -> Any:
        return await asyncio.to_thread(fn, *a)

    async def open(self, url: str) -> None:
        await self.call(self.d.get, url)

    async def login(self, base_url: str, user: str = "commander", password: str = TEST_PASSWORD) -> None:
        """Log this browser in (POST /api/auth/login from the ground's own page: the HttpOnly cookie)."""
        await self.open(f"{base_url}/api/auth/me")  # any page of the ground's origin (not the console itself,
        status = await self.call(self.d.execute_async_script, """
            const done = arguments[arguments.length - 1];
            fetch('/api/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({username: arguments[0], password: arguments[1]})})
              .then(r => done(r.status), e => done(String(e)));""", user, password)
        assert status == 200, f"login as {user}: {status}"
        # (so the console page the test opens next is a fresh load, not a hash change of this one)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.d.execute_script, script, *args)

    async def wait(self, script: str, *args: Any, timeout: float = 20.0, what: str = "") -> Any:
        """Until the JS expression ``script`` (a function body returning a value) is truthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.js(script, *args)
            except Exception as e:  # the page may be navigating; retry
                last = repr(e)
            else:
                if last:
                    return last
            await asyncio.sleep(0.25)
        name = "timeout-" + "".join(c if c.isalnum() else "_" for c in (what or script))[:60]
        await self.shot(name)
        text = await self.js("return document.body ? document.body.innerText.slice(0, 3000) : ''")
        raise AssertionError(f"timed out after {timeout} s waiting for {what or script!r} (last: {last!r});"
                             f" screenshot artifacts/web/{name}.png; page text:\n{text}")

    async def click(self, css: str, timeout: float = 15.0) -> None:
        await self.wait(f"const e = document.querySelector({css!r}); if (e) {{ e.click(); return true; }}",
                        timeout=timeout, what=f"click {css}")

    async def click_text(self, css: str, text: str, timeout: float = 15.0) -> None:
        """Click the first element matching css whose text contains ``text``."""
        await self.wait(f"for (const e of document.querySelectorAll({css!r})) {{ if (e.textContent.includes({text!r}))"
                        " { e.click(); return true; } }", timeout=timeout, what=f"click {css} '{text}'")

    async def text(self, css: str) -> str:
        return await self.js(f"const e = document.querySelector({css!r}); return e ? e.textContent : ''")

    async def painted(self) -> None:
        """Until the browser has rendered what the page has now (two animation frames)."""
        await self.call(self.d.execute_async_script, "const done = arguments[arguments.length - 1];"
                        " requestAnimationFrame(() => requestAnimationFrame(() => done(true)));")

    async def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        p = SHOTS / f"{name}.png"
        await self.call(self.d.save_screenshot, str(p))
        return p


def _driver(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,900",
              f"--user-data-dir={profile}"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: bash scripts/setup.sh installs Debian's chromium and chromium-driver "
                        "(as root), or run 'sudo apt-get install chromium chromium-driver'")
    profile = tempfile.mkdtemp(prefix="lb-chromium-")
    d = _driver(profile)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    p = Page(browser)
    await p.call(browser.delete_all_cookies)
    yield p
    try:
        logs = await p.call(browser.get_log, "browser")
    except Exception:  # logs are a diagnostic only
        logs = []
    bad = [e["message"][:300] for e in logs if e.get("level") == "SEVERE" and "/api/auth/me" not in e["message"]]
    if bad:
        print("browser console errors:\n" + "\n".join(bad))
    await p.open("about:blank")

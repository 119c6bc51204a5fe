"""The console's full-rate live stream (/api/web/live) in real headless Chromium: every sample
of a 10 Hz HK parameter and of a 100 Hz, three-axis seismic stream reaches the page, and a
console that stops consuming is dropped and resynced by the ground, which the page shows."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np
import pytest
from test_web_console import REALTIME, TLM, aapi, open_console

from ground.testing import make_packet
from wire import defs

pytestmark = pytest.mark.browser


async def _feed(node: Any, t_base: float) -> None:
    """n04 at full rate: 10 HK packets and one 100-sample seismic batch per second of node
    time, one MQTT message a second (as a node batching its packets sends them)."""
    k = 0
    while True:
        t = t_base + k
        hk = [make_packet("HK", node="n04", t=t + i / 10, cpu_temp=20 + (k * 10 + i) % 17, hk_period=0.1, boot_count=1,
                          flags=defs.HK_FLAG_SYNCED) for i in range(10)]
        i = np.arange(100) + 100 * k
        samples = np.stack([30 * np.sin(i / 5), 20 * np.cos(i / 7), 5 * np.sin(i / 3)], axis=1)
        await node.publish_tm(*hk, make_packet("SEISMIC", node="n04", t=t, rate=100, samples=samples))
        k += 1
        await asyncio.sleep(max(0.0, t_base + k - time.time()))  # the feed's own pace


async def test_live_hk_and_seismic_arrive_at_full_rate(console: Any, page: Any) -> None:
    t_base = float(int(time.time()) + 1)
    feed = asyncio.create_task(_feed(console.base.sim.nodes["n04"], t_base))
    try:
        await open_console(page, console.url, "#/browse/lunabase:site/lunabase:node.n04/lunabase:seismic.n04?"
                           + REALTIME.format(back=60000))
        # the HK parameter as a plot subscribes (batches), recording every sample's time tag
        await page.call(page.d.execute_async_script, """const done = arguments[arguments.length - 1];
            window.__hk = [];
            window.openmct.objects.get('lunabase:tlm.n04.HK.cpu_temp').then((o) => {
              window.openmct.telemetry.subscribe(o, (b) => { for (const d of b) window.__hk.push(d.utc); },
                                                 {strategy: 'batch'});
              done(true);
            });""")
        # a 5 s window of node time, from the 3rd second of the feed on (both subscriptions are live by then)
        w0, w1 = t_base + 3, t_base + 8
        await page.wait(f"const g = window.lunabaseGround; return g.seismicLog.some(e => e[0] === 'n04' && e[1] >= {w1 * 1000})"
                        f" && window.__hk.some(t => t >= {w1 * 1000})", timeout=60, what="the feed past the window")
        hk_times = await page.js("return window.__hk")
        log = await page.js("return window.lunabaseGround.seismicLog.filter(e => e[0] === 'n04')")
        got_hk = sum(1 for t in hk_times if w0 * 1000 <= t < w1 * 1000)
        got_seis = 0
        for _node, t_ms, n, rate in log:
            ts = t_ms / 1000 + np.arange(n) / rate
            got_seis += int(((ts >= w0) & (ts < w1)).sum())
        # what the ground archived in the same window: the browser got every sample of it
        arch = await aapi(console.url, f"/api/web/history?node=n04&packet=HK&field=cpu_temp&start={w0}&end={w1}"
                                       "&strategy=page&limit=5000")
        seis = await aapi(console.url, f"/api/web/seismic?node=n04&start={w0}&end={w1}&size=20000")
        assert arch["count"] == 50 and seis["count"] == 500, (arch["count"], seis["count"])  # 10 Hz, 100 Hz
        assert got_hk == 50, f"{got_hk} HK samples of 50 reached the page (10 Hz over 5 s)"
        assert got_seis == 500, f"{got_seis} seismic samples per axis of 500 reached the page (100 Hz over 5 s)"
        canvas = await page.wait("const c = document.querySelector('.lb-seismic-canvas'); return c && "
                                 "Number(c.dataset.received) >= 500 && c.dataset.received", what="the waveform drawn live")
        assert int(canvas) >= 500
        assert await page.js("return window.lunabaseGround.resyncs") == 0  # a console that keeps up is never dropped
        await page.shot("live-full-rate-seismic")
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def test_slow_console_is_dropped_resynced_and_shows_it(console: Any, page: Any) -> None:
    live = console.ground.api.web.live
    await open_console(page, console.url, TLM.format(n="n01", p="HK", f="cpu_temp") + "?" + REALTIME.format(back=60000))
    await page.js("window.__seis = 0; window.lunabaseGround.subscribeSeismic('n01', (b) => { window.__seis += b.length; })")
    await page.wait("return window.__seis > 0 && window.lunabaseGround.delivered['n01.HK.cpu_temp'] > 0",
                    what="live seismic and HK")
    # a tiny queue bound (test config): a little over one seismic batch (300 samples), and one
    # unacknowledged batch in flight; then the page stops consuming (its JS busy) until the ground drops it
    live.max_pending, live.window = 500, 1
    try:
        deadline = time.monotonic() + 60
        while live.dropped == 0:
            assert time.monotonic() < deadline, "the ground never dropped the busy console"
            await page.js("const t = Date.now() + 2000; while (Date.now() < t) {}")  # a busy page: consumes nothing
        text = await page.wait("const e = document.querySelector('.c-indicator.icon-connectivity');"
                               " return e && e.textContent.includes('resynced') && e.textContent", what="resync indicator")
        resyncs, dropped = await page.js("const g = window.lunabaseGround; return [g.resyncs, g.dropped]")
        client = next(iter(live.clients))
        assert resyncs >= 1 and dropped >= 1 and client.dropped >= 1, (resyncs, dropped, client.dropped)
        assert f"{dropped} dropped" in text, text
        await page.shot("live-resync-indicator")
        # and it is live again afterwards
        before = await page.js("return window.__seis")
        await page.wait(f"return window.__seis > {before}", what="live again after the resync")
    finally:
        live.max_pending, live.window = 200_000, 4

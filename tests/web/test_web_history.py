"""The web console's server side without a browser: history decimated for plots (SQLite and
PostgreSQL), the routes' answers to bad input, saved displays, the page's security headers."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from ground.api import ApiServer
from ground.archive import Archive, _decimate, open_archive
from ground.ops import Operations, OpsStore
from ground.parse import Parser
from ground.testing import make_packet, test_auth
from wire import ccsds
from wire.inventory import Inventory
from wire.timetag import unix_to_ticks

PG_DSN = os.environ.get("LUNABASE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = 1_780_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Archive]:
    if request.param == "sqlite":
        a = open_archive(f"sqlite:///{tmp_path}/a.db")
        yield a
        a.close()
        return
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception as e:
        pytest.skip(f"no PostgreSQL at {PG_DSN}: {e}")
    from ground.archive.postgres import PostgresArchive

    a = open_archive(PG_DSN, schema=f"lb_web_{uuid.uuid4().hex[:12]}")
    assert isinstance(a, PostgresArchive)
    try:
        yield a
    finally:
        a.drop_schema()
        a.close()


def _fill(a: Archive, values: np.ndarray, per_segment: int = 10, node: str = "n01") -> None:
    """HK packets at 1 Hz from T0 with cpu_temp = values[i], ``per_segment`` per archive segment."""
    p = Parser()
    for k in range(0, len(values), per_segment):
        payload = b"".join(make_packet("HK", seq=i % ccsds.SEQ_MOD, t=T0 + i, node=node, cpu_temp=float(values[i]))
                           for i in range(k, min(k + per_segment, len(values))))
        with a.transaction() as tx:
            tx.append_packets("moon", node, p.parse(payload), payload, T0 + k)


def test_minmax_keeps_every_bucket_extreme_and_its_time(archive: Archive) -> None:
    v = np.round(10 * np.sin(np.arange(3000) / 50), 2)
    v[1234] = 80.0  # one spike of one sample
    v[2345] = -60.0
    _fill(archive, v)
    r = _decimate.minmax(archive, "HK", "cpu_temp", "n01", T0, T0 + 3000, size=100, site="moon")
    assert r["method"] == "exact" and r["decimated"] and r["count"] == 3000
    assert len(r["time"]) <= 200 and r["time"] == sorted(r["time"])
    assert max(r["value"]) == 80.0 and min(r["value"]) == -60.0
    assert r["time"][r["value"].index(80.0)] == pytest.approx(T0 + 1234, abs=1e-3)
    # each bucket's min and max are the true ones
    t = np.asarray(r["time"])
    for b in range(100):
        sel = (t >= T0 + 30 * b) & (t < T0 + 30 * (b + 1))
        seg = v[30 * b:30 * (b + 1)]
        assert max(np.asarray(r["value"])[sel]) == pytest.approx(seg.max())
        assert min(np.asarray(r["value"])[sel]) == pytest.approx(seg.min())
    # few samples: returned as they are
    small = _decimate.minmax(archive, "HK", "cpu_temp", "n01", T0, T0 + 50, size=100, site="moon")
    assert not small["decimated"] and small["value"] == pytest.approx(list(v[:50]))


def test_long_ranges_are_bucketed_by_the_database_exactly(archive: Archive) -> None:
    """Over EXACT_MAX_SEGMENTS the database buckets the range (GROUP BY over the segments'
    min/max columns) and the answer is still every bucket's exact min and max at its own time:
    with segments inside a bucket, segments straddling bucket edges and the range's, single
    spikes, and segments archived before the min/max columns existed."""
    rng = np.random.default_rng(7)
    v = np.round(rng.normal(0, 10, 6000), 2)
    v[[17, 2222, 4321, 5999]] = [300.0, -300.0, 255.5, -320.0]  # one-sample spikes, one at the very end
    p = Parser()
    k = 0
    sizes = [1, 7, 1, 1, 13, 2, 1, 40]  # segments of 1 to 40 packets: some cross bucket edges
    while k < len(v):
        n = sizes[k % len(sizes)]
        payload = b"".join(make_packet("HK", t=T0 + i, node="n01", cpu_temp=float(v[i]))
                           for i in range(k, min(k + n, len(v))))
        with archive.transaction() as tx:
            tx.append_packets("moon", "n01", p.parse(payload), payload, T0 + k)
        k += n
    spec = archive.spec("HK")
    j = spec.numeric.index("cpu_temp")
    # an archive from before the min/max columns: some segments without them
    with archive.transaction() as tx:
        tx.db.execute(f"UPDATE {spec.table} SET lo{j} = NULL, hi{j} = NULL WHERE t0 < {unix_to_ticks(T0 + 500)}")
    t_all, v_all = _decimate._column(archive, "HK", "cpu_temp", "n01", None, None, "moon")
    assert len(v_all) == len(v) and np.allclose(v_all, v)
    v = v_all  # as archived (engineering values of the raw integers)
    for t0, t1, size in [(T0, T0 + 6000, 50), (T0 + 3.5, T0 + 5999.5, 37), (T0 + 100, T0 + 400, 7), (T0, T0 + 6000, 5000)]:
        r = _decimate.minmax(archive, "HK", "cpu_temp", "n01", t0, t1, size, site="moon", exact_max_segments=10)
        assert r["method"] == "database"
        # the exact answer from every sample, bucketed the same way (node time tags, buckets of whole ticks)
        ticks = np.array([unix_to_ticks(T0 + i) for i in range(len(v))], dtype=np.int64)
        lo, hi = unix_to_ticks(t0), unix_to_ticks(t1)
        width = -(-(hi - lo) // size)
        ok = (ticks >= lo) & (ticks < hi) & np.isfinite(v)
        b = (ticks[ok] - lo) // width
        want = {}
        for bb, x in zip(b.tolist(), v[ok].tolist(), strict=True):
            mn, mx = want.get(bb, (x, x))
            want[bb] = (min(mn, x), max(mx, x))
        got: dict[int, list[float]] = {}
        for t, x in zip(r["time"], r["value"], strict=True):
            i = round(t - T0)
            assert x == v[i], (t, x)  # a real sample at its own time
            got.setdefault(int((ticks[i] - lo) // width), []).append(x)
        assert sorted(got) == sorted(want)
        for bb, (mn, mx) in want.items():
            assert min(got[bb]) == mn and max(got[bb]) == mx, (t0, t1, size, bb)
        assert r["time"] == sorted(r["time"]) and len(r["time"]) <= 2 * size


def test_pages_and_latest(archive: Archive) -> None:
    v = np.arange(250, dtype=float)
    _fill(archive, v)
    got: list[float] = []
    start = T0
    for _ in range(10):
        page = _decimate.page_after(archive, "HK", "cpu_temp", "n01", start, T0 + 1000, 100, site="moon")
        got += page["value"]
        if not page["more"]:
            break
        start = page["next"]
    assert got == v.tolist()  # every sample once, in order, across three pages
    last = _decimate.latest(archive, "HK", "cpu_temp", "n01", T0 + 1000, site="moon")
    assert last["value"] == [249.0] and last["time"][0] == pytest.approx(T0 + 249, abs=1e-3)
    none = _decimate.latest(archive, "HK", "cpu_temp", "n01", T0 - 10, lookback=5, site="moon")
    assert none["count"] == 0


def test_seismic_from_the_archive(archive: Archive) -> None:
    p = Parser()
    for k in range(20):  # 20 s at 100 Hz
        i = np.arange(100) + 100 * k
        s = np.stack([100 * np.sin(i / 10), np.full(100, 5.0), -np.full(100, 7.0)], axis=1)
        payload = make_packet("SEISMIC", seq=k, t=T0 + k, node="n01", rate=100, samples=s)
        with archive.transaction() as tx:
            tx.append_packets("moon", "n01", p.parse(payload), payload, T0 + k)
    full = _decimate.seismic(archive, "n01", T0, T0 + 20, size=5000, site="moon")
    assert full["count"] == 2000 and not full["decimated"] and full["rate"] == 100
    assert len(full["x"]) == 2000 and full["time"] == sorted(full["time"])
    dec = _decimate.seismic(archive, "n01", T0, T0 + 20, size=100, site="moon")
    assert dec["decimated"] and len(dec["time"]) == 100
    assert max(dec["x_max"]) == pytest.approx(max(full["x"]), rel=0.01)
    assert min(dec["x_min"]) == pytest.approx(min(full["x"]), rel=0.01)
    assert set(dec["y_min"]) == {full["y"][0]}


@pytest.fixture
async def server(tmp_path: Any) -> Any:
    inv = Inventory.generate("moon", ["n01"])
    a = open_archive(f"sqlite:///{tmp_path}/a.db")
    _fill(a, np.arange(100, dtype=float))
    ops = Operations(inv, OpsStore(tmp_path / "ops.db"))
    auth = test_auth()
    s = await ApiServer(ops, archive=a, auth=auth).start()
    s.headers = {"Authorization": "Bearer " + auth.accounts.create_key("operator", "web tests", by="test")}
    yield s
    await s.stop()
    a.close()


async def test_routes_refuse_bad_input_with_a_reason(server: Any) -> None:
    base = server.url
    async with aiohttp.ClientSession(headers=server.headers) as c:
        async def get(path: str) -> tuple[int, Any]:
            async with c.get(base + path, allow_redirects=False) as r:
                ct = r.headers.get("Content-Type", "")
                return r.status, (await r.json()) if "json" in ct else await r.text()

        st, body = await get(f"/api/web/history?node=n01&packet=HK&field=cpu_temp&start={T0}&end={T0 + 200}&size=10")
        assert st == 200 and body["count"] == 100 and body["source"] == "archive"
        for path, status, words in [
            ("/api/web/history?node=n01&packet=HK", 400, "required"),
            ("/api/web/history?node=zz&packet=HK&field=cpu_temp", 404, "zz"),
            ("/api/web/history?node=n01&packet=HK&field=nope", 404, "nope"),
            ("/api/web/history?node=n01&packet=NOPE&field=x", 404, "NOPE"),
            (f"/api/web/history?node=n01&packet=HK&field=cpu_temp&start={T0}&end={T0 - 1}", 400, "before"),
            ("/api/web/history?node=n01&packet=HK&field=cpu_temp&start=nan", 400, ""),
            ("/api/web/history?node=n01&packet=HK&field=cpu_temp&size=0", 400, ""),
            ("/api/web/history?node=n01&packet=HK&field=cpu_temp&strategy=all", 400, "strategy"),
            ("/api/web/history?node=n01&packet=HK&field=cpu_temp&bogus=1", 400, "bogus"),
            ("/api/web/objects/..%2f..%2fetc", 400, ""),
            ("/api/web/objects/none-such", 404, "none-such"),
        ]:
            st, body = await get(path)
            assert st == status, (path, st, body)
            assert isinstance(body, dict) and words in body["error"], (path, body)
        # no file outside the console's folders, whatever the path says
        for path in ("/console/../routes.py", "/console/%2e%2e/routes.py", "/openmct/../package.json",
                     "/console/..%2f__init__.py"):
            st, _ = await get(path)
            assert st == 404, path
        st, _ = await get("/")
        assert st == 302
        async with c.get(base + "/console/") as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "worker-src 'self' blob:" in csp and "frame-ancestors 'none'" in csp
            assert "http" not in csp  # nothing from another origin
            assert "/openmct/openmct.js" in await r.text()


async def test_saved_displays_are_checked_and_shared(server: Any) -> None:
    base = server.url
    obj = {"identifier": {"namespace": "lunabase-saved", "key": "k1"}, "name": "Power", "type": "layout",
           "composition": [], "configuration": {"items": []}}
    async with aiohttp.ClientSession(headers=server.headers) as c:
        async with c.put(base + "/api/web/objects/k1", json=obj) as r:
            assert r.status == 200
        async with c.put(base + "/api/web/objects/k2", json=obj) as r:  # key and identifier disagree
            assert r.status == 400 and "k2" in (await r.json())["error"]
        async with c.put(base + "/api/web/objects/k1", data="x", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415  # a cross-site "simple request" cannot write a display
        big = dict(obj, notes="x" * (300 * 1024))
        async with c.put(base + "/api/web/objects/k1", json=big) as r:
            assert r.status == 413
        async with c.put(base + "/api/web/objects/k1", data="[1", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with c.get(base + "/api/web/objects") as r:
            rows = await r.json()
        assert [(o["key"], o["name"], o["type"]) for o in rows] == [("k1", "Power", "layout")]
        async with c.get(base + "/api/web/objects/k1") as r:
            assert (await r.json())["configuration"] == {"items": []}
        async with c.delete(base + "/api/web/objects/k1") as r:
            assert r.status == 200
        async with c.get(base + "/api/web/objects/k1") as r:
            assert r.status == 404


async def test_live_stream_sends_every_sample_and_drops_a_console_that_stops_acknowledging(server: Any) -> None:
    """/api/web/live: every sample of what the console follows, in batches it acknowledges;
    unacknowledged, its queue grows to its bound, then the ground empties it and says so."""
    live = server.web.live
    live.flush_s, live.window, live.max_pending = 0.02, 2, 400
    p = Parser()
    seq = [0]

    def feed(n: int) -> None:  # n HK packets (cpu_temp = 0..n-1) and one seismic batch, as ingest hands them over
        pk = [make_packet("HK", seq=seq[0] + i, t=T0 + 1000 + seq[0] + i, node="n01", cpu_temp=float(i))
              for i in range(n)]
        pk.append(make_packet("SEISMIC", seq=seq[0], t=T0 + 1000 + seq[0], node="n01", rate=100,
                              samples=np.ones((100, 3))))
        seq[0] += n
        payload = b"".join(pk)
        server.ops.on_packets("moon", "n01", p.parse(payload), None, T0 + 2000.0, payload)

    async with aiohttp.ClientSession(headers=server.headers) as c:
        async with c.ws_connect(server.url + "/api/web/live") as ws:
            await ws.send_json({"subscribe": ["n01.HK.cpu_temp", 7]})
            err = await ws.receive_json(timeout=10)
            assert err["type"] == "error" and "node.PACKET.field" in err["error"]
            assert not next(iter(live.clients)).params  # all or nothing
            await ws.send_json({"subscribe": ["n01.HK.cpu_temp"], "seismic": ["n01"]})
            while not live.clients or "n01" not in next(iter(live.clients)).seismic:
                await asyncio.sleep(0.01)
            feed(50)
            got_t: list[float] = []
            seismic = 0
            while len(got_t) < 50 or seismic < 100:
                m = await ws.receive_json(timeout=10)
                assert m["type"] == "batch", m
                got_t += m["params"].get("n01.HK.cpu_temp", {}).get("t", [])
                seismic += sum(len(b["x"]) for b in m["seismic"].get("n01", []))
                await ws.send_json({"ack": m["seq"]})
            assert len(got_t) == 50 and seismic == 100 and got_t == sorted(got_t)  # every sample, in order
            # the console stops acknowledging: at most `window` batches, then its queue fills and is dropped
            unacked = []
            for _ in range(6):
                feed(10)  # 10 + 300 samples a time
                await asyncio.sleep(0.05)
            while True:
                m = await ws.receive_json(timeout=10)
                if m["type"] == "resync":
                    break
                unacked.append(m)
            assert len(unacked) <= live.window
            client = next(iter(live.clients))
            assert m["resyncs"] == client.resyncs >= 1 and m["dropped"] == client.dropped > 0
            assert client.npending <= live.max_pending
            # acknowledging again, it is live again
            feed(5)
            m = await ws.receive_json(timeout=10)
            assert m["type"] == "batch" and m["resyncs"] >= 1
    async with aiohttp.ClientSession() as c:  # no credential: no stream
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await c.ws_connect(server.url + "/api/web/live")
        assert e.value.status == 401

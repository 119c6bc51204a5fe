"""Accounts, login, the request guard and role boundaries of the client interface (plain HTTP).

A real ApiServer on a loopback port, real aiohttp requests: every route refuses a request
without a credential, cross-site shapes (text/plain or form POST, foreign Origin, foreign
Host, WebSocket from another origin) are refused, each role boundary holds, and the
two-person rule keeps a hazardous command from its sender's own approval.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys

import aiohttp
import pytest

from ground.api import ApiServer
from ground.auth import AccountError, AccountStore, Auth, InsecureFile
from ground.auth.credentials import load_credentials, save_credentials
from ground.auth.roles import TwoPersonPolicy, may_approve, may_send
from ground.client import ApiError, GroundClient
from ground.ops import Operations, OpsStore
from ground.testing import TEST_PASSWORD, add_test_accounts
from lunabase import ROOT
from wire.inventory import Inventory

PW = TEST_PASSWORD


@pytest.fixture
async def api(tmp_path):
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append((topic, payload))

    ops = Operations(Inventory.generate("moon", ["n01", "n02"]), OpsStore(tmp_path / "ops.db"), publish=publish,
                     light_time=0)
    ops.sent = sent  # type: ignore[attr-defined]
    store = AccountStore.open(tmp_path / "users.json", create=True)
    add_test_accounts(store)
    auth = Auth(store, policy=TwoPersonPolicy(timeout=600))
    server = await ApiServer(ops, port=0, auth=auth).start()
    ops.nodes.on_status("n01", {"state": "online", "hk_period": 30}, __import__("time").time())
    clients: list[GroundClient] = []

    def client(user: str) -> GroundClient:
        c = GroundClient(server.url, user=user, password=PW)
        clients.append(c)
        return c

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for 127.0.0.1
        yield server, ops, client, http
    for c in clients:
        await c.close()
    await server.stop()


async def _login(http: aiohttp.ClientSession, url: str, user: str, pw: str = PW) -> dict:
    async with http.post(url + "/api/auth/login", json={"username": user, "password": pw}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


# -- the contract ----------------------------------------------------------------------------

async def test_login_refresh_logout_me(api):
    server, ops, client, http = api
    async with http.post(server.url + "/api/auth/login", json={"username": "operator", "password": PW}) as r:
        assert r.status == 200
        d = await r.json()
        ck = r.headers.getall("Set-Cookie")
    assert set(d) >= {"access_token", "refresh_token", "expires_in", "user"}
    assert d["user"] == {"name": "operator", "roles": ["operator"]} and 0 < d["expires_in"] <= 600
    cookie = next(c for c in ck if c.startswith("lb_session="))
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "path=/" in low and "secure" not in low  # plain HTTP
    h = {"Authorization": f"Bearer {d['access_token']}"}
    async with http.get(server.url + "/api/auth/me", headers=h) as r:
        me = await r.json()
    assert me["name"] == "operator" and me["roles"] == ["operator"] and "command" in me["privileges"]
    assert "command.hazardous" not in me["privileges"]
    # refresh: a new pair; the old refresh token is spent, and presenting it again ends the session
    async with http.post(server.url + "/api/auth/refresh", json={"refresh_token": d["refresh_token"]}) as r:
        assert r.status == 200
        d2 = await r.json()
    assert d2["access_token"] != d["access_token"] and d2["refresh_token"] != d["refresh_token"]
    async with http.get(server.url + "/api/nodes", headers=h) as r:
        assert r.status == 401  # the replaced access token is dead
    h2 = {"Authorization": f"Bearer {d2['access_token']}"}
    async with http.get(server.url + "/api/nodes", headers=h2) as r:
        assert r.status == 200
    async with http.post(server.url + "/api/auth/refresh", json={"refresh_token": d["refresh_token"]}) as r:
        assert r.status == 401 and "error" in await r.json()
    async with http.get(server.url + "/api/nodes", headers=h2) as r:
        assert r.status == 401  # reuse of a spent refresh token ended the whole session
    d3 = await _login(http, server.url, "operator")
    h3 = {"Authorization": f"Bearer {d3['access_token']}"}
    async with http.post(server.url + "/api/auth/logout", headers=h3, json={}) as r:
        assert r.status == 200
    async with http.get(server.url + "/api/nodes", headers=h3) as r:
        assert r.status == 401
    async with http.post(server.url + "/api/auth/refresh", json={"refresh_token": d3["refresh_token"]}) as r:
        assert r.status == 401


async def test_every_route_and_the_websocket_refuse_without_credential(api):
    server, ops, client, http = api
    checked = public = 0
    for res in server.app.router.resources():
        info = res.get_info()
        path = info.get("path") or info.get("formatter", "")
        path = path.replace("{id}", "1").replace("{key}", "k1").replace("{path}", "index.html")
        for route in res:
            if route.method == "HEAD":
                continue
            if getattr(route.handler, "__lb_privilege__", None) == "public" and not path.startswith("/api/"):
                public += 1  # the web console's static page and Open MCT's files: no data, the login form
                continue
            async with http.request(route.method, server.url + path, json={}) as r:
                body = await r.json()
                if path in ("/api/auth/login", "/api/auth/refresh"):
                    assert r.status == 400, path  # no credential in the body: nothing issued
                else:
                    assert r.status == 401, (route.method, path, r.status)
                    assert "error" in body and r.headers.get("WWW-Authenticate", "").startswith("Bearer")
            checked += 1
    assert checked >= 25 and public <= 4
    # a forged or expired bearer is no better
    async with http.get(server.url + "/api/nodes", headers={"Authorization": "Bearer lba_forged"}) as r:
        assert r.status == 401
    async with http.get(server.url + "/api/nodes", headers={"Authorization": "Basic b3A6cHc="}) as r:
        assert r.status == 401
    # the WebSocket without a credential: nothing but an error, then closed 4401
    async with http.ws_connect(server.url + "/api/ws") as ws:
        await ws.send_str("ping")
        m = await ws.receive_json(timeout=5)
        assert m["type"] == "error" and m["status"] == 401
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401


async def test_websocket_by_first_message_and_by_cookie(api):
    server, ops, client, http = api
    d = await _login(http, server.url, "viewer")
    async with aiohttp.ClientSession() as fresh, fresh.ws_connect(server.url + "/api/ws") as ws:  # no cookie
        await ws.send_json({"auth": d["access_token"]})
        assert (await ws.receive_json(timeout=5))["user"]["name"] == "viewer"
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    # the cookie the login set, with the ground's own Origin
    async with http.ws_connect(server.url + "/api/ws", origin=server.url) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    # the same cookie but no Origin: a cookie alone never opens the stream
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        async with http.ws_connect(server.url + "/api/ws"):
            pass
    assert e.value.status == 403


async def test_cross_site_shapes_are_refused(api):
    server, ops, client, http = api
    d = await _login(http, server.url, "commander")  # the session also holds the lb_session cookie
    foreign = "http://127.0.0.1:9"
    body = json.dumps({"node": "n01", "command": "PING"})
    # a "simple" cross-site POST (no preflight): text/plain, and a form
    async with http.post(server.url + "/api/commands", data=body, headers={"Content-Type": "text/plain",
                                                                             "Origin": foreign}) as r:
        assert r.status in (403, 415) and "error" in await r.json()
    async with http.post(server.url + "/api/commands", data=body, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415  # even with the cookie and no Origin
    async with http.post(server.url + "/api/commands", data={"node": "n01", "command": "PING"}) as r:
        assert r.status == 415  # application/x-www-form-urlencoded
    # JSON from a foreign Origin, even with a valid bearer token
    async with http.post(server.url + "/api/commands", json={"node": "n01", "command": "PING"},
                         headers={"Origin": foreign, "Authorization": f"Bearer {d['access_token']}"}) as r:
        assert r.status == 403 and "Origin" in (await r.json())["error"]
    async with http.post(server.url + "/api/commands", json={"node": "n01", "command": "PING"},
                         headers={"Origin": "null"}) as r:
        assert r.status == 403
    # a cookie-authenticated state change must name an allowed Origin
    async with http.post(server.url + "/api/commands", json={"node": "n01", "command": "PING"}) as r:
        assert r.status == 403 and "Origin" in (await r.json())["error"]
    async with http.post(server.url + "/api/commands", json={"node": "n01", "command": "PING"},
                         headers={"Origin": server.url}) as r:
        assert r.status == 201 and (await r.json())["user"] == "commander"
    # browsers' own cross-site marker
    async with http.post(server.url + "/api/commands", json={"node": "n01", "command": "PING"},
                         headers={"Origin": server.url, "Sec-Fetch-Site": "cross-site"}) as r:
        assert r.status == 403
    # the WebSocket from a foreign origin, with the cookie
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        async with http.ws_connect(server.url + "/api/ws", origin=foreign):
            pass
    assert e.value.status == 403
    # DNS rebinding: a foreign Host is refused even with a valid token, on reads too
    h = {"Authorization": f"Bearer {d['access_token']}"}
    async with http.get(server.url + "/api/nodes", headers={**h, "Host": f"evil.example:{server.port}"}) as r:
        assert r.status == 403 and "Host" in (await r.json())["error"]
    async with http.get(server.url + "/api/nodes", headers={**h, "Host": f"localhost:{server.port}"}) as r:
        assert r.status == 200
    # no CORS anywhere: a preflight gets no Access-Control-* header
    async with http.options(server.url + "/api/commands", headers={"Origin": foreign,
                                                                   "Access-Control-Request-Method": "POST"}) as r:
        assert r.status >= 400 and not any(k.lower().startswith("access-control") for k in r.headers)
    counts = server.auth.refused
    assert counts["content_type"] >= 2 and counts["origin"] >= 3 and counts["host"] >= 1


async def test_failed_logins_are_rate_limited(api):
    server, ops, client, http = api
    for _ in range(5):
        async with http.post(server.url + "/api/auth/login", json={"username": "operator", "password": "wrong-pw!"}) as r:
            assert r.status == 401 and (await r.json())["error"] == "bad username or password"
    async with http.post(server.url + "/api/auth/login", json={"username": "operator", "password": PW}) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0  # even the right password waits
    async with http.post(server.url + "/api/auth/login", json={"username": "nobody", "password": PW}) as r:
        assert r.status == 401  # an unknown name: the same answer as a wrong password
    events = ops.store.events(kind="auth", limit=50)
    assert any("login failed for 'operator'" in e["message"] for e in events)
    assert not any(PW in e["message"] or "wrong-pw!" in e["message"] for e in events)  # never a secret


# -- role boundaries, audit, two-person rule -------------------------------------------------

async def test_role_boundaries_and_audit(api):
    server, ops, client, http = api
    viewer, operator, commander = client("viewer"), client("operator"), client("commander")
    assert [n["node"] for n in await viewer.nodes()] == ["n01", "n02"]
    with pytest.raises(ApiError) as e:
        await viewer.send_command("n01", "PING")
    assert e.value.status == 403 and "command" in e.value.message
    with pytest.raises(ApiError) as e:
        await operator.send_command("n01", "REBOOT", {"delay_s": 1}, confirm=True)
    assert e.value.status == 403 and "hazardous" in e.value.message
    row = await operator.send_command("n01", "PING")
    assert row["user"] == "operator" and row["stage"] == "SENT"
    with pytest.raises(ApiError) as e:  # a name in the body never signs for someone else
        await operator.send_command("n01", "PING", user="flight-director")
    assert e.value.status == 403
    with pytest.raises(ApiError) as e:  # confirm must be a JSON boolean, not "no"
        await commander._req("POST", "/api/commands", body={"node": "n01", "command": "SET_MODE",
                                                             "args": {"mode": "SAFE", "duration_s": 0},
                                                             "confirm": "no"})
    assert e.value.status == 400
    # cancelling: one's own yes, another's only with command.cancel_any
    q = await operator.send_command("n02", "PING")  # n02 unreachable: stays QUEUED
    q2 = await commander.send_command("n02", "PING")
    with pytest.raises(ApiError) as e:
        await operator.cancel_command(q2["id"])
    assert e.value.status == 403
    assert (await operator.cancel_command(q["id"]))["stage"] == "CANCELLED"
    assert (await commander.cancel_command(q2["id"]))["stage"] == "CANCELLED"
    # alarms: viewer cannot ack
    ops.alarms.set_condition("moon", "n01", "HK", "cpu_temp", 2, 99.0, "C")
    aid = (await viewer.alarms())[0]["id"]
    with pytest.raises(ApiError) as e:
        await viewer.ack(aid)
    assert e.value.status == 403
    assert (await operator.shelve(aid, 5))["shelved_by"] == "operator"
    assert (await operator.ack(aid))["acked_by"] == "operator"
    # the audit: every command event and alarm action carries the account
    cmd_events = [e for e in ops.store.events(kind="command", limit=100) if "by" in e["message"]]
    assert {e["data"].get("user") for e in cmd_events} >= {"operator", "commander"}
    msgs = [e["message"] for e in ops.store.events(kind="alarm", limit=50)]
    assert any("acknowledged by operator" in m for m in msgs) and any("shelved by operator" in m for m in msgs)
    # admin: accounts yes, commanding no
    admin = client("admin")
    users = await admin._req("GET", "/api/auth/users")
    assert {u["name"] for u in users["users"]} >= {"viewer", "operator", "commander", "admin"}
    assert not any("password" in json.dumps(u).replace('"password": true', "") for u in users["users"])
    with pytest.raises(ApiError) as e:
        await operator._req("GET", "/api/auth/users")
    assert e.value.status == 403
    with pytest.raises(ApiError) as e:
        await admin.send_command("n01", "PING")
    assert e.value.status == 403


async def test_two_person_rule(api):
    server, ops, client, http = api
    c1, c2, op = client("commander"), client("commander2"), client("operator")
    row = await c1.send_command("n01", "REBOOT", {"delay_s": 1}, confirm=True)
    assert row["stage"] == "AWAITING_APPROVAL" and row["user"] == "commander"
    n_sent = len(ops.sent)
    with pytest.raises(ApiError) as e:
        await c1.approve_command(row["id"])
    assert e.value.status == 403 and "second account" in e.value.message
    with pytest.raises(ApiError) as e:
        await op.approve_command(row["id"])
    assert e.value.status == 403
    assert len(ops.sent) == n_sent and (await c1.command(row["id"]))["stage"] == "AWAITING_APPROVAL"
    done = await c2.approve_command(row["id"])
    assert done["approved_by"] == "commander2" and done["stage"] == "SENT"
    assert [h[0] for h in done["history"]] == ["AWAITING_APPROVAL", "APPROVED", "QUEUED", "SENT"]
    assert "approved by commander2" in done["history"][1][2] and len(ops.sent) == n_sent + 1
    # deny
    row = await c2.send_command("n01", "SET_MODE", {"mode": "SAFE", "duration_s": 0}, confirm=True)
    with pytest.raises(ApiError):
        await c2.deny_command(row["id"], "mine")
    denied = await c1.deny_command(row["id"], "not now")
    assert denied["stage"] == "DENIED" and "denied by commander: not now" in denied["reason"]
    # expiry
    row = await c1.send_command("n01", "CLEAR_SAFE", {}, confirm=True)
    await ops.commander.pump(now=row["submitted"] + 601)
    expired = await c1.command(row["id"])
    assert expired["stage"] == "EXPIRED" and "approved" in expired["reason"]
    # a non-hazardous command goes straight out
    assert (await c1.send_command("n01", "PING"))["stage"] == "SENT"
    ev = [e["message"] for e in ops.store.events(kind="command", limit=100)]
    assert any("APPROVED: approved by commander2" in m for m in ev)
    assert any("AWAITING_APPROVAL by commander" in m for m in ev)


def test_command_patterns_restrict_a_role():
    from ground.auth import roles

    narrow = roles.Role(frozenset({roles.READ, roles.COMMAND}), ("PING", "SET_*"), "a narrow test role")
    table = {**roles.ROLES, "operator": narrow}
    assert may_send(["operator"], "PING", False, table) and may_send(["operator"], "SET_RATE", False, table)
    assert not may_send(["operator"], "REPLAY", False, table) and not may_send(["operator"], "TIME_SYNC", False, table)
    assert not may_send(["operator"], "SET_MODE", True, table)  # a matching name is not enough for a hazardous one


def test_role_table():
    assert may_send(["operator"], "PING", False) and not may_send(["operator"], "REBOOT", True)
    assert may_send(["commander"], "REBOOT", True) and not may_send(["viewer"], "PING", False)
    assert not may_send(["admin"], "PING", False)
    assert may_approve(["commander"], "REBOOT", True) and not may_approve(["operator"], "PING", False)
    p = TwoPersonPolicy(require=["SET_RATE"], exempt=["CLEAR_*"])
    assert p.applies("REBOOT", True) and p.applies("SET_RATE", False) and not p.applies("CLEAR_SAFE", True)
    assert not p.applies("PING", False)


# -- accounts file, API keys, credentials ----------------------------------------------------

def test_accounts_file_is_private_and_refused_when_not(tmp_path):
    p = tmp_path / "users.json"
    s = AccountStore.open(p, create=True)
    s.scrypt_n = 2 ** 10
    s.add("alice", "long enough pw", ["admin"], by="test")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    raw = p.read_text()
    assert "long enough pw" not in raw and "scrypt$" in raw
    assert s.authenticate_password("alice", "long enough pw") is not None
    assert s.authenticate_password("alice", "wrong password") is None
    with pytest.raises(AccountError):
        s.add("alice", "long enough pw", ["admin"], by="test")
    with pytest.raises(AccountError):
        s.add("bob", "short", ["viewer"], by="test")
    with pytest.raises(AccountError):
        s.add("bob", "long enough pw", ["pilot"], by="test")
    os.chmod(p, 0o644)
    with pytest.raises(InsecureFile, match="users.json.*chmod 600"):
        AccountStore.open(p)
    inv = Inventory.generate("moon", ["n01"]).save(tmp_path / "base.toml")
    r = subprocess.run([sys.executable, "-m", "lunabase.cli", "ground", "--inventory", str(inv), "--users", str(p)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and str(p) in r.stderr and "group/others" in r.stderr
    os.chmod(p, 0o600)
    r = subprocess.run([sys.executable, "-m", "lunabase.cli", "users", "--file", str(p), "list"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "alice" in r.stdout and "scrypt" not in r.stdout


async def test_api_key_lifecycle_and_revocation_reaches_a_running_ground(api, tmp_path):
    server, ops, client, http = api
    store = server.auth.accounts
    store.add("hil-bot", None, ["operator"], by="test")
    key = store.create_key("hil-bot", "CI", by="test")
    assert key not in (tmp_path / "users.json").read_text()
    bot = GroundClient(server.url, token=key)
    try:
        assert (await bot.send_command("n01", "PING"))["user"] == "hil-bot"
        # revoked from another process's copy of the file, as `lunabase users token --revoke` does
        other = AccountStore.open(tmp_path / "users.json")
        other.revoke_key("hil-bot", key[4:].split("_")[0], by="local:test")
        await asyncio.sleep(1.1)
        with pytest.raises(ApiError) as e:
            await bot.nodes()
        assert e.value.status == 401
    finally:
        await bot.close()
    ev = [e["message"] for e in ops.store.events(kind="auth", limit=50)]
    assert any("hil-bot: key_revoke by local:test" in m for m in ev)
    # a personal key minted over the API needs the password again
    op = client("operator")
    with pytest.raises(ApiError) as e:
        await op.create_key("not my password")
    assert e.value.status == 403
    k = await op.create_key(PW, "laptop")
    assert k["key"].startswith("lbk_") and (await GroundClient(server.url, token=k["key"]).me())["name"] == "operator"


def test_credentials_file(tmp_path, monkeypatch):
    monkeypatch.delenv("LUNABASE_TOKEN", raising=False)
    monkeypatch.delenv("LUNABASE_USER", raising=False)
    p = tmp_path / "cred"
    save_credentials("http://g:8700", user="alice", token="lbk_1_x", path=p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    c = load_credentials("http://g:8700/", path=p)
    assert c.token == "lbk_1_x" and c.user == "alice" and "lbk_1_x" not in repr(c)
    assert not load_credentials("http://other:8700", path=p)
    monkeypatch.setenv("LUNABASE_TOKEN", "lbk_2_y")
    assert load_credentials("http://g:8700", path=p).token == "lbk_2_y"
    monkeypatch.delenv("LUNABASE_TOKEN")
    os.chmod(p, 0o640)
    with pytest.raises(InsecureFile):
        load_credentials("http://g:8700", path=p)


def test_users_cli_lifecycle(tmp_path):
    """`lunabase users add|roles|token|passwd|remove|list`: the file stays 0600 and records who changed what."""
    p = tmp_path / "users.json"
    env = dict(os.environ, LUNABASE_NEW_PASSWORD="a long password 1")

    def users(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lunabase.cli", "users", "--file", str(p), *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, env=env)

    assert users("add", "alice", "--role", "admin").returncode == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert users("add", "bot", "--role", "operator", "--service").returncode == 0
    r = users("add", "eve", "--role", "pilot")
    assert r.returncode == 1 and "unknown role 'pilot'" in r.stderr
    assert users("roles", "alice", "admin", "commander").returncode == 0
    r = users("token", "bot", "--label", "CI")
    key = r.stdout.strip()
    assert r.returncode == 0 and key.startswith("lbk_") and "shown only now" in r.stderr
    s = AccountStore.open(p)
    assert s.authenticate_key(key) is not None and key not in p.read_text()
    assert s.get("alice").roles == ["commander", "admin"] and s.get("bot").password is None
    kid = key[4:].split("_")[0]
    assert users("token", "bot", "--revoke", kid).returncode == 0
    assert users("passwd", "alice").returncode == 0
    assert users("remove", "bot").returncode == 0
    out = users("list").stdout
    assert "alice" in out and "bot" not in out
    s = AccountStore.open(p)
    assert s.authenticate_key(key) is None and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [a["action"] for a in s.audit] == ["add", "add", "roles", "key_create", "key_revoke", "passwd", "remove"]
    assert all(a["by"].startswith("local:") for a in s.audit)


async def test_lunabase_login_stores_a_working_key(api, tmp_path):
    server, ops, client, http = api
    cred = tmp_path / "credentials"
    env = dict(os.environ, LUNABASE_CREDENTIALS=str(cred), LUNABASE_PASSWORD=PW)
    env.pop("LUNABASE_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunabase.cli", "login", "--api", server.url, "--user", "operator", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600 and PW not in cred.read_text()
    creds = load_credentials(server.url, path=cred)
    assert creds.token and creds.token.startswith("lbk_")
    async with GroundClient(server.url, credentials=creds) as g:
        assert (await g.me())["name"] == "operator"
        assert (await g.send_command("n01", "PING"))["user"] == "operator"


async def test_an_open_websocket_closes_when_its_key_is_revoked(api):
    server, ops, client, http = api
    store = server.auth.accounts
    key = store.create_key("viewer", "wall screen", by="test")
    async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/api/ws",
                                                          headers={"Authorization": f"Bearer {key}"}) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        store.revoke_key("viewer", key[4:].split("_")[0], by="test")
        while True:  # live messages may come first; then the error and the close
            m = await ws.receive(timeout=15)
            if m.type == aiohttp.WSMsgType.TEXT and json.loads(m.data).get("type") == "error":
                assert json.loads(m.data)["status"] == 401
                continue
            if m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
    assert ws.close_code == 4401

"""Broker security against a real mosquitto: passwords, per-node ACLs, TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from typing import Any

import aiomqtt
import pytest

from ground.broker import (
    acl_text,
    hash_password,
    make_self_signed,
    security_config,
    tls_listener,
    write_password_file,
)
from sim.mosquitto import Mosquitto, free_port
from wire import topics
from wire.inventory import Inventory


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_self_signed(tmp_path_factory.mktemp("tls")) if shutil.which("openssl") else None


@pytest.fixture(params=["python-hash", "mosquitto_passwd"])
def secured(request: pytest.FixtureRequest, tmp_path, certs):
    if request.param == "mosquitto_passwd" and not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    inv = Inventory.generate("moon", ["n01", "n02"])
    pw = write_password_file(inv, tmp_path / "passwd", use_mosquitto_passwd=request.param == "mosquitto_passwd")
    acl = tmp_path / "acl"
    acl.write_text(acl_text(inv))
    extra = f"password_file {pw}\nacl_file {acl}\n"
    tls = certs
    tls_port = None
    if tls is not None:
        tls_port = free_port()
        extra += tls_listener(tls_port, tls)
    with Mosquitto(extra_config=extra, allow_anonymous=False) as b:
        yield inv, b, tls, tls_port


def _client(b: Mosquitto | _Generated, user: str, pw: str, ident: str, v5: bool = False) -> aiomqtt.Client:
    # nodes speak MQTT 3.1.1 (umqtt / mqtt_as); the ground MQTT 5
    return aiomqtt.Client(b.host, b.port, username=user, password=pw, identifier=ident,
                          protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311)


async def _collect(client: aiomqtt.Client, into: list[tuple[str, Any]], stop: float = 1.0) -> None:
    try:
        async with asyncio.timeout(stop):
            async for m in client.messages:
                into.append((m.topic.value, m.payload))
    except TimeoutError:
        pass


async def test_node_cannot_publish_as_another(secured) -> None:
    inv, b, _tls, _p = secured
    n1, n2 = inv.node("n01"), inv.node("n02")
    got: list[tuple[str, Any]] = []
    async with _client(b, inv.ground_user, inv.ground_password, "ground", v5=True) as g:
        await g.subscribe("lunabase/#", qos=1)
        for forged in (topics.topic("moon", "n02", "tm"), topics.topic("moon", "n02", "status"),
                       topics.topic("other", "n01", "tm"), "lunabase/moon/n01/cmd"):
            # mosquitto 2.0 drops the message and may close the offender's connection
            try:
                async with _client(b, "n01", n1.password, "n01") as c1:
                    await c1.publish(forged, b"forged", qos=1)
                    await asyncio.sleep(0.1)
            except aiomqtt.MqttError:
                pass
        async with _client(b, "n01", n1.password, "n01") as c1:
            await c1.publish(topics.topic("moon", "n01", "tm"), b"genuine", qos=1)
        await _collect(g, got, 1.5)
    assert got == [("lunabase/moon/n01/tm", b"genuine")]
    del n2


async def test_node_reads_only_its_own_commands(secured) -> None:
    inv, b, _tls, _p = secured
    got1: list[tuple[str, Any]] = []
    async with _client(b, "n01", inv.node("n01").password, "n01") as c1:
        await c1.subscribe(topics.topic("moon", "n02", "cmd"), qos=1)
        await c1.subscribe("lunabase/#", qos=1)
        async with _client(b, inv.ground_user, inv.ground_password, "ground", v5=True) as g:
            await g.publish(topics.topic("moon", "n02", "cmd"), b"for n02", qos=1)
            await g.publish(topics.topic("moon", "n01", "cmd"), b"for n01", qos=1)
        async with _client(b, "n02", inv.node("n02").password, "n02") as c2:
            await c2.publish(topics.topic("moon", "n02", "tm"), b"n02 tm", qos=1)
        try:
            async with _client(b, "n02", inv.node("n02").password, "n02") as c2:
                await c2.publish(topics.topic("moon", "n01", "cmd"), b"n02 forging a command", qos=1)
                await asyncio.sleep(0.1)
        except aiomqtt.MqttError:
            pass
        await _collect(c1, got1, 1.5)
    assert [p for _t, p in got1] == [b"for n01"]


async def test_wrong_password_and_anonymous_refused(secured) -> None:
    inv, b, _tls, _p = secured
    with pytest.raises(aiomqtt.MqttError):
        async with _client(b, "n01", "not-the-password", "x1"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with _client(b, "n01", inv.node("n02").password, "x2"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(b.host, b.port, identifier="anon"):
            pass


async def test_tls_listener(secured) -> None:
    inv, b, tls, tls_port = secured
    if tls is None:
        pytest.skip("openssl is not installed")
    ctx = ssl.create_default_context(cafile=str(tls.cafile))
    got: list[tuple[str, Any]] = []
    async with aiomqtt.Client(b.host, tls_port, username=inv.ground_user, password=inv.ground_password,
                              identifier="g-tls", tls_context=ctx, protocol=aiomqtt.ProtocolVersion.V5) as g:
        await g.subscribe("lunabase/#", qos=1)
        async with _client(b, "n01", inv.node("n01").password, "n01") as c1:
            await c1.publish(topics.topic("moon", "n01", "tm"), b"over tls", qos=1)
        await _collect(g, got, 1.0)
    assert got == [("lunabase/moon/n01/tm", b"over tls")]


def test_hash_matches_mosquitto_format() -> None:
    h = hash_password("secret", salt=bytes(12))
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(h.split("$")[-1]) == 88
    assert "max_queued_messages 0" in security_config(__import__("pathlib").Path("p"), __import__("pathlib").Path("a"))


async def test_ground_ingest_through_acls_with_shared_subscription(secured, tmp_path) -> None:
    from ground.archive import open_archive
    from ground.ingest import IngestWorker
    from ground.ingest.testing import hk

    inv, b, _tls, _p = secured
    archive = open_archive(f"sqlite:///{tmp_path}/acl.db")
    w = IngestWorker(archive, b.host, b.port, username=inv.ground_user, password=inv.ground_password,
                     client_id="ground-ingest-1", share="ingest")
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.connected.wait(), 10)
    async with _client(b, "n01", inv.node("n01").password, "n01") as c1:
        for i in range(5):
            await c1.publish(topics.topic("moon", "n01", "tm"), hk(i), qos=1)
    for _ in range(100):
        if archive.count_raw() == 5:
            break
        await asyncio.sleep(0.05)
    w.stop()
    await task
    assert archive.count_raw(node="n01") == 5
    archive.close()


class _Generated:
    """mosquitto running the configuration write_broker_config generated, unmodified."""

    def __init__(self, files, port: int) -> None:
        import subprocess

        from sim.mosquitto import find_mosquitto, wait_port

        self.host, self.port = "127.0.0.1", port
        self.log_path = files.config.parent / "mosquitto.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([find_mosquitto(), "-v", "-c", str(files.config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.host, port, 10)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


def _generate(inv: Inventory, d, **kw):
    import os

    from ground.broker import write_broker_config

    port = free_port()
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    files = write_broker_config(inv, d, port=port, use_mosquitto_passwd=False, user="root" if root else None, **kw)
    return files, port


def test_generated_config_opens_only_its_listeners(tmp_path) -> None:
    """Every listener option sits inside a listener block: no default listener on 1883 (a
    global use_username_as_clientid made mosquitto 2.0 open one on every interface)."""
    import re

    inv = Inventory.generate("moon", ["n01"])
    for kw in ({}, {"tls_port": free_port()}, {"tls_port": free_port(), "plaintext": True}):
        files, port = _generate(inv, tmp_path / "b", **kw)
        g = _Generated(files, kw.get("tls_port") or port)
        try:
            import time

            time.sleep(0.3)
            opened = sorted(int(p) for p in re.findall(r"listen socket on port (\d+)", g.log_path.read_text()))
        finally:
            g.close()
        want = sorted(([port] if not kw.get("tls_port") or kw.get("plaintext") else []) + ([kw["tls_port"]] if "tls_port" in kw else []))
        assert opened == want, (kw, opened, files.config.read_text())


def _attack(b, user: str, pw: str, ids: list[str], until: float, log: list[str]) -> None:
    """Connect again and again with one node's credentials under other clients' ids (persistent
    sessions, as the issue's attacker did), holding each connection a moment."""
    import time

    import paho.mqtt.client as mqtt

    i = 0
    while time.monotonic() < until:
        ident = ids[i % len(ids)]
        i += 1
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ident, clean_session=False)
        c.username_pw_set(user, pw)
        try:
            rc = c.connect(b.host, b.port, keepalive=5)
            c.loop_start()
            time.sleep(0.3)
            c.loop_stop()
            c.disconnect()
            log.append(f"{ident}: {rc}")
        except OSError as e:
            log.append(f"{ident}: {e}")


@pytest.mark.parametrize("tied", [True, False], ids=["use_username_as_clientid", "control-without"])
async def test_node_credentials_cannot_displace_another_client(tmp_path, tied) -> None:
    """n01's credentials under the ids of n02, the ground's ingest and its command link: with
    use_username_as_clientid the broker renames them n01, so nobody is kicked off and the
    ground archives every packet n02 publishes meanwhile.  The control shows the attack
    does displace them without it (what the issue found)."""
    import threading
    import time

    from ground.archive import open_archive
    from ground.ingest import IngestWorker
    from ground.ingest.testing import hk

    inv = Inventory.generate("moon", ["n01", "n02"])
    files, port = _generate(inv, tmp_path / "broker")
    assert "use_username_as_clientid true" in files.config.read_text()
    if not tied:  # the control: the same generated config without the option
        files.config.write_text(files.config.read_text().replace("use_username_as_clientid true\n", ""))
    archive = open_archive(f"sqlite:///{tmp_path}/hijack.db")
    b = _Generated(files, port)
    try:
        user, pw = inv.ground_account()
        w = IngestWorker(archive, b.host, b.port, username=user, password=pw, client_id="lunabase-ground")
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(w.connected.wait(), 10)
        log: list[str] = []
        victims = ["n02", "lunabase-ground", "ground", "ground-cmd", "lunabase-ground-cmd"]
        t = threading.Thread(target=_attack, args=(b, "n01", inv.node("n01").password, victims,
                                                   time.monotonic() + 6, log))
        t.start()
        n = 0
        kicked = None
        try:
            async with _client(b, "n02", inv.node("n02").password, "n02") as c2:
                t_end = time.monotonic() + 6
                while time.monotonic() < t_end:
                    await c2.publish(topics.topic("moon", "n02", "tm"), hk(n), qos=1)  # raises once n02 is kicked
                    n += 1
                    await asyncio.sleep(0.02)
        except aiomqtt.MqttError as e:
            kicked = e
        await asyncio.to_thread(t.join)
        for _ in range(200):
            if archive.count_raw(node="n02") >= n:
                break
            await asyncio.sleep(0.05)
        w.stop()
        await task
        blog = b.log_path.read_text()
    finally:
        b.close()
    archive_n02 = archive.count_raw(node="n02")
    archive.close()
    assert len(log) >= 5 and all(x.endswith(": 0") for x in log), log  # the attacker got in (as n01)...
    takeovers = [x for x in blog.splitlines() if "already connected, closing old connection" in x
                 and "Client n01 already" not in x]
    if not tied:
        assert takeovers and (kicked is not None or w.connections > 1), blog[-3000:]
        return
    assert not takeovers, takeovers
    assert kicked is None and w.connections == 1  # ... neither n02 nor the ground's ingest was disconnected
    assert archive_n02 == n > 100  # and the ground archived every packet


def test_generated_secrets_are_private_on_every_save(tmp_path) -> None:
    import stat

    from ground.broker import write_broker_config

    inv = Inventory.generate("moon", ["n01"])
    d = tmp_path / "b"
    files = write_broker_config(inv, d, port=free_port(), use_mosquitto_passwd=False)
    for p in (files.password_file, files.acl_file):
        p.chmod(0o644)  # loosened by hand (or an older version's file)
    files = write_broker_config(inv, d, port=free_port(), use_mosquitto_passwd=False)
    for p in (files.password_file, files.acl_file):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    # one account per ground-side connection, passwords derived (stable across loads)
    users = [x.split(":")[0] for x in files.password_file.read_text().splitlines()]
    assert users[:3] == ["ground", "ground-cmd", "ground-2"] and "n01" in users and "ground-sim" in users
    inv.save(tmp_path / "inv.toml")
    assert Inventory.load(tmp_path / "inv.toml").ground_account("cmd") == inv.ground_account("cmd")


async def test_broker_refuses_oversized_packets(tmp_path) -> None:
    """A node with its own password cannot push a 1 MB status through the generated config."""
    from ground.broker import MAX_PACKET_SIZE

    inv = Inventory.generate("moon", ["n01"])
    pw = write_password_file(inv, tmp_path / "passwd")
    acl = tmp_path / "acl"
    acl.write_text(acl_text(inv))
    n1 = inv.node("n01")
    got: list[tuple[str, Any]] = []
    with Mosquitto(extra_config=security_config(pw, acl), allow_anonymous=False) as b:
        async with _client(b, inv.ground_user, inv.ground_password, inv.ground_user, v5=True) as g:
            await g.subscribe("lunabase/#", qos=1)
            async def offend() -> None:
                async with _client(b, "n01", n1.password, "n01") as c1:
                    await c1.publish(topics.topic("moon", "n01", "status"), b"{" + b" " * 1_000_000 + b"}", qos=1)
                    await asyncio.sleep(0.3)

            try:
                await asyncio.wait_for(offend(), 2.0)
            except (aiomqtt.MqttError, TimeoutError):
                pass  # the broker closes the offender's connection
            async with _client(b, "n01", n1.password, "n01") as c1:
                await c1.publish(topics.topic("moon", "n01", "tm"), b"x" * (MAX_PACKET_SIZE - 2048), qos=1)
            await _collect(g, got, 1.5)
    assert [len(p) for _t, p in got] == [MAX_PACKET_SIZE - 2048]


async def test_several_ingest_workers_each_with_its_account(tmp_path) -> None:
    """With client ids tied to accounts, shared-subscription workers still work: each runs
    under its own ground client account (ground, ground-2), both stay connected, and between
    them every packet is archived once."""
    from ground.archive import open_archive
    from ground.ingest import IngestWorker
    from ground.ingest.testing import hk

    inv = Inventory.generate("moon", ["n01"])
    files, port = _generate(inv, tmp_path / "broker")
    archive = open_archive(f"sqlite:///{tmp_path}/two.db")
    b = _Generated(files, port)
    try:
        workers = []
        for acct in ("", "2"):
            user, pw = inv.ground_account(acct)
            workers.append(IngestWorker(archive, b.host, b.port, username=user, password=pw,
                                        client_id="lunabase-ingest", share="ingest"))  # same requested id: harmless
        tasks = [asyncio.create_task(w.run()) for w in workers]
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in workers)), 10)
        async with _client(b, "n01", inv.node("n01").password, "n01") as c1:
            for i in range(200):
                await c1.publish(topics.topic("moon", "n01", "tm"), hk(i), qos=1)
        for _ in range(200):
            if archive.count_raw(node="n01") >= 200:
                break
            await asyncio.sleep(0.05)
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        blog = b.log_path.read_text()
    finally:
        b.close()
    assert archive.count_raw(node="n01") == 200
    assert [w.connections for w in workers] == [1, 1]  # neither displaced the other
    assert all(w.acked > 0 for w in workers), [w.acked for w in workers]  # both took a share
    assert "New client connected" in blog and " u'ground-2'" in blog, blog[-2000:]
    archive.close()

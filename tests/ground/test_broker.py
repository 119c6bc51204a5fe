"""Broker security against a real mosquitto: passwords, per-node ACLs, TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl

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
from lunabase.mosquitto import Mosquitto, free_port
from wire import topics
from wire.inventory import Inventory


@pytest.fixture(scope="module")
def certs(tmp_path_factory):  # noqa: ANN201
    return make_self_signed(tmp_path_factory.mktemp("tls")) if shutil.which("openssl") else None


@pytest.fixture(params=["python-hash", "mosquitto_passwd"])
def secured(request: pytest.FixtureRequest, tmp_path, certs):  # noqa: ANN001, ANN201
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


def _client(b: Mosquitto, user: str, pw: str, ident: str, v5: bool = False) -> aiomqtt.Client:
    # nodes speak MQTT 3.1.1 (umqtt / mqtt_as); the ground MQTT 5
    return aiomqtt.Client(b.host, b.port, username=user, password=pw, identifier=ident,
                          protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311)


async def _collect(client: aiomqtt.Client, into: list, stop: float = 1.0) -> None:
    try:
        async with asyncio.timeout(stop):
            async for m in client.messages:
                into.append((m.topic.value, m.payload))
    except TimeoutError:
        pass


async def test_node_cannot_publish_as_another(secured) -> None:  # noqa: ANN001
    inv, b, _tls, _p = secured
    n1, n2 = inv.node("n01"), inv.node("n02")
    got: list = []
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


async def test_node_reads_only_its_own_commands(secured) -> None:  # noqa: ANN001
    inv, b, _tls, _p = secured
    got1: list = []
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


async def test_wrong_password_and_anonymous_refused(secured) -> None:  # noqa: ANN001
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


async def test_tls_listener(secured) -> None:  # noqa: ANN001
    inv, b, tls, tls_port = secured
    if tls is None:
        pytest.skip("openssl is not installed")
    ctx = ssl.create_default_context(cafile=str(tls.cafile))
    got: list = []
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


async def test_ground_ingest_through_acls_with_shared_subscription(secured, tmp_path) -> None:  # noqa: ANN001
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

"""TLS end to end with the firmware on the MicroPython VM: the node verifies the broker's
certificate against the site CA (CERT_REQUIRED), refuses a broker whose certificate another
CA signed, and publishes over verified TLS into the ground's archive; the ground refuses
the impostor broker too.  Prints the heap a TLS connection costs the node."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from ground.archive import open_archive
from ground.broker import TlsFiles, make_self_signed
from ground.ingest import IngestWorker
from sim.mosquitto import Mosquitto
from wire import defs

from firmware_helpers import node_config, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_self_signed(tmp_path_factory.mktemp("site-ca"))


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another CA and a server certificate for the same names: what a rogue broker would present."""
    return make_self_signed(tmp_path_factory.mktemp("impostor"))


# TLS needs heap for the handshake and the session (mbedtls): more than the ~7 KB a node
# has left at 100 KB on the 64-bit unix port; TLS nodes run with 128 KB (docs/firmware.md)
TLS_HEAP = "128K"


def tls_node(make_node, port: int, ca: TlsFiles, name: str = "node"):
    node = make_node(node_config(port, broker={"tls": True, "ca": "ca.der", "tls_host": "localhost"}), name=name,
                     heap=TLS_HEAP)
    (node.dir / "ca.der").write_bytes(ssl.PEM_cert_to_DER_cert(ca.cafile.read_text()))
    return node


def _hk_free_heap(archive) -> list[int]:
    i = 4  # HK field order: uptime, boot_count, reset_cause, mode, free_heap
    return [struct.unpack_from(defs.HK_FMT, p.data, 12)[i] for p in archive.raw_packets(node="n01", apid=defs.APID_HK)]


async def _ingest_until(archive, b: Mosquitto, ctx: ssl.SSLContext | None, pred, timeout: float) -> IngestWorker:
    w = IngestWorker(archive, b.host, b.port, client_id="ground-tls", tls=ctx)
    task = asyncio.create_task(w.run())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        await asyncio.sleep(0.2)
    w.stop()
    await asyncio.wait_for(task, 10)
    return w


def test_node_publishes_over_verified_tls_into_the_archive(make_node, site_ca, tmp_path: Path) -> None:
    archive = open_archive(f"sqlite:///{tmp_path}/tls.db")
    ctx = ssl.create_default_context(cafile=str(site_ca.cafile))
    with Mosquitto(tls=site_ca) as b:
        node = tls_node(make_node, b.port, site_ca).start()
        w = asyncio.run(_ingest_until(archive, b, ctx, lambda: archive.count_raw(node="n01", apid=defs.APID_HK) >= 12, 90))
        assert w.connections == 1
        hk = archive.count_raw(node="n01", apid=defs.APID_HK)
        assert hk >= 12, node.log()
        assert "New client connected" in b.log() and "n01" in b.log()
    tls_heap = _hk_free_heap(archive)
    archive.close()
    # the same node without TLS, for the heap figure (same VM, same config otherwise)
    plain_archive = open_archive(f"sqlite:///{tmp_path}/plain.db")
    with Mosquitto() as b:
        node2 = make_node(node_config(b.port), name="plain", heap=TLS_HEAP).start()
        asyncio.run(_ingest_until(plain_archive, b, None,
                                  lambda: plain_archive.count_raw(node="n01", apid=defs.APID_HK) >= 12, 90))
        plain_heap = _hk_free_heap(plain_archive)
        node2.kill()
    plain_archive.close()
    t, p = sorted(tls_heap[4:])[len(tls_heap[4:]) // 2], sorted(plain_heap[4:])[len(plain_heap[4:]) // 2]
    print(f"\nfree heap (median HK, {TLS_HEAP} heap): plain MQTT {p} B, verified TLS {t} B: TLS costs {p - t} B")


def test_node_and_ground_refuse_a_broker_the_site_ca_did_not_sign(make_node, site_ca, impostor, tmp_path: Path) -> None:
    archive = open_archive(f"sqlite:///{tmp_path}/rogue.db")
    with Mosquitto(tls=impostor) as rogue:
        node = tls_node(make_node, rogue.port, site_ca).start()
        wait_for(lambda: node.log().count("not correctly signed by the trusted CA") >= 2, 60, "the node refusing", node)
        assert "New client connected" not in rogue.log()  # no CONNECT (credentials) ever reached it
        ctx = ssl.create_default_context(cafile=str(site_ca.cafile))
        w = asyncio.run(_ingest_until(archive, rogue, ctx, lambda: False, 3))
        assert w.connections == 0 and not w.connected.is_set()
        assert "New client connected" not in rogue.log()
        node.kill()
    # and a certificate for another name, even from the site CA, is refused as well
    with Mosquitto(tls=site_ca) as b:
        n2 = make_node(node_config(b.port, broker={"tls": True, "ca": "ca.der", "tls_host": "broker.elsewhere"}),
                       name="wrongname", heap=TLS_HEAP)
        (n2.dir / "ca.der").write_bytes(ssl.PEM_cert_to_DER_cert(site_ca.cafile.read_text()))
        n2.start()
        wait_for(lambda: "does not match with the expected CN" in n2.log(), 60, "hostname check", n2)
        assert "New client connected" not in b.log()
    archive.close()


def test_tls_without_a_ca_is_a_config_error(make_node, site_ca) -> None:
    node = make_node(node_config(18830, broker={"tls": True, "ca": "missing.der"})).start()
    wait_for(lambda: "CONFIG_ERROR broker.ca" in node.log(), 30, "config error", node)


def test_node_and_ground_end_to_end_over_tls(make_node, site_ca, tmp_path: Path) -> None:
    """The whole path over verified TLS: the firmware on the VM publishes into a running ground
    (GroundService: ingest, archive, ops) that verifies the broker with the site CA; the ground
    commands the node back over the same TLS broker with a validity window, and it executes."""
    from ground.service import GroundService
    from wire.inventory import Inventory, Node

    from firmware_helpers import KEY, SITE

    inv = Inventory(SITE, [Node("n01", KEY, "unused-on-an-anonymous-broker")], ground_password="")
    with Mosquitto(tls=site_ca) as b:
        node = tls_node(make_node, b.port, site_ca).start()

        async def run() -> tuple[int, dict[str, Any]]:
            svc = GroundService(b.url, inv, f"sqlite:///{tmp_path}/ground.db", api_port=0, light_time=0,
                                ca=site_ca.cafile, ops_db=tmp_path / "ops.db")
            async with svc:
                await svc.wait_connected(15)
                assert svc.ops is not None
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and svc.archive.count_raw(node="n01", apid=defs.APID_HK) < 5:
                    await asyncio.sleep(0.2)
                now = time.time()
                c = await svc.ops.commander.submit("n01", "PING", user="test", not_before=now - 5, not_after=now + 60)
                done = await svc.ops.commander.wait(c["id"], 30)
                return svc.archive.count_raw(node="n01", apid=defs.APID_HK), done

        hk, done = asyncio.run(run())
        assert hk >= 5, node.log()
        assert done["stage"] == "EXECUTED", (done, node.log())
        node.kill()

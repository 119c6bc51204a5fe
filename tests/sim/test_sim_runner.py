"""Scenario files, node configs, the sensor bus protocol (with a stand-in node) and accounting."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from sim.accounting import Accounting, ApidCount
from sim.faults import Fault, FaultError
from sim.runner import Scenario, ScenarioError, SimBase, list_scenarios
from sim.sensorbus import SensorBus
from wire import ccsds, defs, topics


def test_shipped_scenarios_load() -> None:
    names = list_scenarios()
    assert {"demo", "lunar-night", "spe-moonquake", "long-outage"} <= set(names)
    for n in names:
        sc = Scenario.load(n)
        assert sc.nodes and sc.acceleration > 0
        sc.environment()  # builds
    night = Scenario.load("lunar-night")
    small = [n for n in night.nodes if n.id == "small"][0]
    assert small.station["battery_wh"] < [n for n in night.nodes if n.id == "big"][0].station["battery_wh"]
    assert night.nodes[0].firmware["power"]["sleep_s"] == 8  # defaults merged into every node
    lo = Scenario.load("long-outage")
    assert [f.kind for f in lo.faults] == ["link_cut", "link_cut"]
    far = [n for n in lo.nodes if n.id == "far"][0]
    assert far.firmware["journal"]["segments"] == 4


def test_scenario_errors_name_the_field() -> None:
    with pytest.raises(ScenarioError, match="no scenario"):
        Scenario.load("nope")
    with pytest.raises(ScenarioError, match="unknown field"):
        Scenario.from_dict({"node": [{"id": "a", "batery_wh": 3}]})
    with pytest.raises(ScenarioError, match="no \\[\\[node\\]\\]"):
        Scenario.from_dict({})
    with pytest.raises(FaultError, match="kind must be one of"):
        Fault.from_toml({"at_s": 1, "kind": "meteor"})
    with pytest.raises(FaultError, match="at_s"):
        Fault.from_toml({"kind": "reset"})


def test_node_count_expands() -> None:
    sc = Scenario.from_dict({"node": [{"id": "b", "count": 3, "battery_wh": 10}]})
    assert [n.id for n in sc.nodes] == ["b001", "b002", "b003"]
    assert all(n.station["battery_wh"] == 10 for n in sc.nodes)


def test_node_config_from_inventory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sc = Scenario.from_dict(
        {"site": {"preset": "equator", "id": "base1"}, "node": [{"id": "n1", "firmware": {"journal": {"segments": 4}}}]}
    )
    inv_path = tmp_path / "inv.toml"
    base = SimBase(sc, inventory_path=inv_path, workdir=tmp_path / "w")
    inv = base.inventory = base._inventory()
    assert inv_path.exists() and oct(inv_path.stat().st_mode & 0o777) == "0o600"
    cfg = base.node_config(sc.nodes[0], inv.node("n1"), 12345)
    assert cfg["broker"]["port"] == 12345 and cfg["broker"]["user"] == "n1"
    assert cfg["key"] == inv.node("n1").key.hex() and cfg["board"] == "sim" and cfg["site"] == "base1"
    assert cfg["journal"] == {"segments": 4}
    # a second run reuses the same keys
    again = SimBase(sc, inventory_path=inv_path, workdir=tmp_path / "w2")._inventory()
    assert again.node("n1").key == inv.node("n1").key


def test_custody_s_turns_custody_on_unless_the_scenario_says_otherwise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SimBase(custody_s=S) (a ground that confirms custody is the receiver) gives every node
    journal.custody_s = S; a scenario's own firmware override wins; without it custody stays off."""
    sc = Scenario.from_dict({"node": [{"id": "n1", "firmware": {"journal": {"segments": 4}}},
                                      {"id": "n2", "firmware": {"journal": {"custody_s": 0}}}]})
    on = SimBase(sc, workdir=tmp_path / "w", custody_s=10)
    inv = on.inventory = on._inventory()
    assert on.node_config(sc.nodes[0], inv.node("n1"), 1)["journal"] == {"segments": 4, "custody_s": 10}
    assert on.node_config(sc.nodes[1], inv.node("n2"), 1)["journal"] == {"custody_s": 0}
    off = SimBase(sc, workdir=tmp_path / "w2", inventory=inv)
    assert "custody_s" not in off.node_config(sc.nodes[0], inv.node("n1"), 1)["journal"]
    with pytest.raises(ValueError, match="custody_s"):
        SimBase(sc, custody_s=-1)


def test_cli_custody_needs_a_ground_broker(capsys: pytest.CaptureFixture[str]) -> None:
    from lunabase.cli import main

    assert main(["sim", "run", "demo", "--custody", "10"]) == 2
    assert "--custody needs" in capsys.readouterr().err


async def test_sensor_bus_with_a_stand_in_node() -> None:
    """The protocol from the simulator's side; a few lines of asyncio play the node."""
    reports: list[tuple[str, dict]] = []
    bus = await SensorBus(on_report=lambda n, m: reports.append((n, m))).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", bus.port)
        w.write(b'{"hello": "n7", "boot": 3}\n{"mode": "NIGHT", "load_w": 0.06, "heater": 0}\n')
        await w.drain()
        for _ in range(100):
            if bus.peers.get("n7") and bus.peers["n7"].mode == "NIGHT":
                break
            await asyncio.sleep(0.02)
        peer = bus.peers["n7"]
        assert peer.boot == 3 and peer.load_w == 0.06 and peer.connected
        bus.set_fault("n7", "battery_soc", "stuck")
        assert bus.broadcast({"n7": {"sensors": {"battery_soc": 50.0}, "sim_time": 1.0}}) == 1
        msg = json.loads(await asyncio.wait_for(r.readline(), 5))
        assert msg["sensors"]["battery_soc"] == 50.0 and msg["faults"] == {"battery_soc": "stuck"}
        assert bus.clock_jump("n7", 3600)
        assert json.loads(await asyncio.wait_for(r.readline(), 5)) == {"clock_jump": 3600}
        assert [m.get("mode") for _, m in reports] == [None, "NIGHT"]
        w.close()
    finally:
        await bus.stop()


async def test_sensor_bus_counts_what_it_cannot_use() -> None:
    """Malformed node lines are counted by reason and the connection keeps working."""
    bus = await SensorBus().start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", bus.port)
        w.write(b'{"mode": "DAY"}\nnot json\n[1, 2]\n{"hello": "n8", "boot": "x"}\n{"hello": "n8", "boot": 1}\n')
        await w.drain()
        for _ in range(100):
            if "n8" in bus.peers:
                break
            await asyncio.sleep(0.02)
        assert bus.peers["n8"].boot == 1 and bus.peers["n8"].connected
        assert bus.rejected == {"before_hello": 1, "bad_json": 1, "not_object": 1, "bad_hello": 1}
        w.close()
    finally:
        await bus.stop()


def _packet(apid: int, seq: int, coarse: int, payload: bytes) -> bytes:
    n = ccsds.OVERHEAD + len(payload)
    buf = bytearray(n)
    struct.pack_into(">HHHIH", buf, 0, 0x0800 | apid, 0xC000 | seq, n - 7, coarse, 0)
    buf[12 : 12 + len(payload)] = payload
    c = ccsds.crc16(buf, 0, n - 2)
    buf[n - 2] = c >> 8
    buf[n - 1] = c & 0xFF
    return bytes(buf)


def test_accounting_counts_delivered_duplicates_and_corruption() -> None:
    acct = Accounting("127.0.0.1", 1, "s")
    t = topics.topic("s", "n1", "tm")
    pl = bytes(36)  # EVENT payload size
    for seq in (0, 1, 2, 2, 4):
        acct.feed(t, _packet(defs.APID_EVENT, seq, 100 + seq, pl))
    bad = bytearray(_packet(defs.APID_EVENT, 5, 105, pl))
    bad[20] ^= 0xFF
    acct.feed(t, bytes(bad))
    acct.feed(topics.topic("s", "n1", "status"), b'{"state": "asleep", "mode": "NIGHT"}')
    r = acct.report()["n1"]
    assert r["produced"] == 5 and r["delivered"] == 4 and r["duplicated"] == 1 and r["missing"] == 1
    assert r["rejected_bytes"] > 0 and r["status"] == "asleep"


def test_sequence_counts_unwrap() -> None:
    a = ApidCount()
    for s in list(range(ccsds.SEQ_MOD - 4, ccsds.SEQ_MOD)) + list(range(0, 5)):
        a.add(s)
    assert a.produced == ccsds.SEQ_MOD + 5 and len(a.seqs) == 9


def test_cli_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    from lunabase.cli import main

    assert main(["sim", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "lunar-night", "spe-moonquake", "long-outage"):
        assert name in out


def test_cli_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from lunabase.cli import main

    assert main(["sim", "run", "no-such-scenario"]) == 2
    assert "no scenario" in capsys.readouterr().err


def test_report_counts_delivery_at_the_archive() -> None:
    """A packet the broker delivered to the observer but the archive lacks is not delivered."""
    from sim.runner import format_report

    rep = {"alpha": {"produced": 100, "delivered": 100, "archived": 76}, "bravo": {"produced": 50, "delivered": 50,
                                                                                   "archived": 50}}
    out = format_report(rep)
    assert "archived 126 of 150 packets produced (84.00 %); 24 seen on the broker but not archived" in out
    assert "100.00 %" not in out
    assert "archived" not in format_report({"alpha": {"produced": 1, "delivered": 1}})


def test_direct_link_refuses_what_only_an_emulator_does() -> None:
    node = [{"id": "a"}]
    assert Scenario.from_dict({"link": {"direct": True}, "node": node}).link_direct
    with pytest.raises(ScenarioError, match="no delay_s"):
        Scenario.from_dict({"link": {"direct": True, "delay_s": 1.28}, "node": node})
    with pytest.raises(ScenarioError, match="no outages"):
        Scenario.from_dict({"link": {"direct": True, "outages": [{"at_s": 1, "duration_s": 2}]}, "node": node})
    with pytest.raises(ScenarioError, match="true or false"):
        Scenario.from_dict({"link": {"direct": "yes"}, "node": node})
    with pytest.raises(ScenarioError, match="link_cut"):
        Scenario.from_dict({"link": {"direct": True}, "node": node,
                            "fault": [{"at_s": 1, "kind": "link_cut", "node": "a"}]})

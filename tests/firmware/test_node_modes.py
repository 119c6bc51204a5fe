"""Safe mode, REPLAY, oversize commands, and power modes driven over the simulator's
sensor bus (docs/sim-protocol.md), on the VM against mosquitto."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

from test_node import acks, events, hk_values, tc

from wire import defs

from firmware_helpers import node_config, wait_for


def test_safe_mode_after_failed_boots_and_clear_safe(broker, ground, make_node):
    node = make_node(node_config(broker.port))
    (node.dir / "data").mkdir()
    (node.dir / "data" / "bootfail").write_text("3")  # three boots in a row died young
    node.start()
    wait_for(lambda: defs.MODE_SAFE in hk_values(ground, "mode"), 60, "HK in SAFE mode", node)
    assert any(e[0] == defs.EVENT_SAFE_MODE for e in events(ground))
    flags = hk_values(ground, "flags")
    assert flags[-1] & defs.HK_FLAG_SAFE, flags
    assert not ground.by_apid(defs.APID_SEISMIC), "seismometer must be off in SAFE mode"
    ground.send_tc("n01", tc(defs.OP_CLEAR_SAFE, 1, seq=1))
    wait_for(lambda: hk_values(ground, "mode")[-1] == defs.MODE_DAY, 30, "back to DAY", node)
    assert (node.dir / "data" / "bootfail").read_text() == "0"


def test_replay_resends_a_sequence_range(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: len(ground.by_apid(defs.APID_HK)) >= 8, 60, "8 HK", node)
    ground.send_tc("n01", tc(defs.OP_REPLAY, 1, struct.pack(defs.ARGS_REPLAY, defs.APID_HK, 2, 3), seq=1))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 1 and a[2] == defs.ACK_STAGE_EXECUTED], 30, "REPLAY executed", node)

    def replayed():
        seqs = [s for a, s, *_ in ground.packets if a == defs.APID_HK]
        return all(seqs.count(s) >= 2 for s in (2, 3, 4)) and seqs.count(5) == 1

    wait_for(replayed, 30, "HK 2..4 re-sent (and only those)", node)
    # the re-sent packets are byte-identical: the ground de-duplicates them
    by_key: dict = {}
    for _a, s, t, raw in ground.by_apid(defs.APID_HK):
        assert by_key.setdefault((s, t), raw) == raw


def test_oversize_command_is_dropped_not_fatal(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: any(s["state"] == "online" for _, s, _ in ground.status), 60, "birth", node)
    ground.client.publish("lunabase/testsite/n01/cmd", b"\xaa" * 20000, qos=1).wait_for_publish(5)
    ground.send_tc("n01", tc(defs.OP_PING, 5, seq=2))
    wait_for(lambda: [a for a in acks(ground) if a[0] == 5 and a[2] == defs.ACK_STAGE_EXECUTED], 30,
             "PING after a 20 kB message", node)
    assert node.alive(), node.log()


class FakeSimulator:
    """The simulator's side of the sensor bus: sends sensor values, records node messages."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.soc = 80.0
        self.received: list[dict] = []
        self.faults: dict[str, str] = {}
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.srv.settimeout(0.5)
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            buf = b""
            while not self.stop:
                msg = {"sensors": {"battery_soc": self.soc, "battery_voltage": 3.3 + self.soc / 100,
                                   "solar_voltage": 0.0, "dose_rate": 60.0},
                       "seismic": {"noise": 0.05, "quakes": []}, "faults": self.faults, "sim_time": 1.0}
                try:
                    conn.sendall((json.dumps(msg) + "\n").encode())
                    buf += conn.recv(4096)
                except TimeoutError:
                    pass
                except OSError:
                    break
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.received.append(json.loads(line))
                time.sleep(0.2)

    def close(self) -> None:
        self.stop = True
        self.srv.close()


def test_power_modes_follow_battery_over_the_sim_bus(broker, ground, make_node):
    # The sensor-bus client (board/simbus.py, simulation only) needs more than the 100 KB
    # heap leaves on the 64-bit unix port: simulated nodes run with 128 KB (docs/firmware.md).
    sim = FakeSimulator()
    try:
        cfg = node_config(broker.port, sim={"host": "127.0.0.1", "port": sim.port})
        node = make_node(cfg, heap="128K").start()
        wait_for(lambda: any("hello" in m for m in sim.received), 60, "hello on the sensor bus", node)
        hello = next(m for m in sim.received if "hello" in m)
        assert hello == {"hello": "n01", "boot": 1}, hello
        wait_for(lambda: [r for *_, r in ground.by_apid(defs.APID_POWER)
                          if struct.unpack_from(defs.POWER_FMT, r, 12)[4] == 8000], 60, "SOC 80 % in POWER", node)
        sim.soc = 20.0  # below night_soc (30 %): hibernate
        wait_for(lambda: any(s["state"] == "asleep" and s["mode"] == "NIGHT" for _, s, _ in ground.status), 60,
                 "asleep in NIGHT", node)
        wait_for(lambda: any(m.get("mode") == "NIGHT" for m in sim.received), 30, "mode reported to the simulator", node)
        sim.soc = 5.0  # critical
        wait_for(lambda: defs.MODE_EMERGENCY in hk_values(ground, "mode"), 90, "EMERGENCY in HK", node)
        assert any(e[0] == defs.EVENT_LOW_BATTERY for e in events(ground))
        sim.soc = 90.0
        wait_for(lambda: hk_values(ground, "mode")[-1] == defs.MODE_DAY, 90, "back to DAY", node)
        changes = [(e[3], e[4]) for e in events(ground) if e[0] == defs.EVENT_MODE_CHANGE]
        assert (defs.MODE_DAY, defs.MODE_NIGHT) in changes and (defs.MODE_NIGHT, defs.MODE_EMERGENCY) in changes, changes
    finally:
        sim.close()


def test_dead_sensor_reported_as_sensor_fault(broker, ground, make_node):
    sim = FakeSimulator()
    try:
        cfg = node_config(broker.port, sim={"host": "127.0.0.1", "port": sim.port})
        node = make_node(cfg, heap="128K").start()
        wait_for(lambda: any("hello" in m for m in sim.received), 60, "hello on the sensor bus", node)
        sim.faults = {"surface_temp": "dead"}
        wait_for(lambda: [e for e in events(ground) if e[0] == defs.EVENT_SENSOR_FAULT and e[3] == defs.SENSOR_THERMAL
                          and e[4] == 0], 60, "SENSOR_FAULT (thermal dead)", node)
        sim.faults = {}
        wait_for(lambda: [e for e in events(ground) if e[0] == defs.EVENT_SENSOR_FAULT and e[3] == defs.SENSOR_THERMAL
                          and e[4] == 1], 60, "SENSOR_FAULT cleared", node)
        # THERMAL packets kept flowing throughout (last values while dead)
        wait_for(lambda: len(ground.by_apid(defs.APID_THERMAL)) >= 3, 30, "THERMAL packets", node)
    finally:
        sim.close()


def test_reboot_command_acks_then_resets_with_cause_command(broker, ground, make_node):
    node = make_node(node_config(broker.port)).start()
    wait_for(lambda: any(s["state"] == "online" for _, s, _ in ground.status), 60, "birth", node)
    ground.send_tc("n01", tc(defs.OP_REBOOT, 3, struct.pack(defs.ARGS_REBOOT, 0), seq=1))
    wait_for(lambda: node.proc is not None and node.proc.poll() is not None, 30, "process exit on REBOOT", node)
    assert node.proc is not None and node.proc.returncode == 75, node.log()  # sim board: "restart me"
    stages = [a[2] for a in acks(ground) if a[0] == 3]
    assert stages[:2] == [defs.ACK_STAGE_ACCEPTED, defs.ACK_STAGE_EXECUTED], stages
    node.start()  # what the simulator / virtual board does on exit code 75
    wait_for(lambda: any(s["boot"] == 2 and s["state"] == "online" for _, s, _ in ground.status), 60, "second boot", node)
    wait_for(lambda: defs.RESET_CAUSE_COMMAND in hk_values(ground, "reset_cause"), 30, "reset cause COMMAND", node)


def test_config_error_reported_to_the_ground(broker, ground, make_node, micropython_bin):
    cfg = node_config(broker.port, rates={"hk_ms": "fast"})
    node = make_node(cfg).start()
    wait_for(lambda: node.proc is not None and node.proc.poll() is not None, 60, "exit on a bad config", node)
    assert node.proc is not None and node.proc.returncode == 78, node.log()
    assert "CONFIG_ERROR rates.hk_ms: must be an integer" in node.log()
    ev = wait_for(lambda: [e for e in events(ground) if e[0] == defs.EVENT_CONFIG_ERROR], 30, "CONFIG_ERROR event", node)
    assert ev[0][5].rstrip(b"\0") == b"rates.hk_ms", ev  # type: ignore[index]
    st = wait_for(lambda: [s for _, s, r in ground.status if "error" in s], 30, "status with the error", node)
    assert st[0]["state"] == "offline" and "rates.hk_ms" in st[0]["error"], st  # type: ignore[index]

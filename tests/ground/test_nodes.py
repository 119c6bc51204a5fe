"""Liveness: asleep vs stale vs lost, with the node's announced sleep schedule and clock offset."""

from __future__ import annotations

from ground.ops import OpsStore
from ground.ops.liveness import ASLEEP, LOST, ONLINE, STALE, UNKNOWN, NodeTracker
from wire.ccsds import EPOCH_UNIX as EPOCH_2000

T0 = 1_800_000_000.0  # a ground unix time


def tracker(**kw):
    store = OpsStore()
    return NodeTracker("s", {"n01": 1.0}, log=store.event, **kw), store


def ticks(unix: float) -> int:
    return int((unix - EPOCH_2000) * 65536)


def test_unknown_online_stale_lost():
    tr, store = tracker(stale_factor=3, lost_factor=30)
    assert tr.get("n01").state == UNKNOWN
    tr.on_packets("n01", ticks(T0), T0)
    assert tr.get("n01").state == ONLINE
    tr.tick(T0 + 2.5)
    assert tr.get("n01").state == ONLINE
    tr.tick(T0 + 3.5)
    assert tr.get("n01").state == STALE
    tr.on_packets("n01", ticks(T0 + 4), T0 + 4)
    assert tr.get("n01").state == ONLINE
    tr.tick(T0 + 40)
    assert tr.get("n01").state == LOST
    states = [e["data"]["to"] for e in store.events(kind="node_state")][::-1]
    assert states == [ONLINE, STALE, ONLINE, LOST]


def test_asleep_is_not_stale_until_announced_contact_plus_grace():
    tr, _ = tracker(grace=30)
    # node clock runs 100 s behind the ground: offset +100 s
    tr.on_packets("n01", ticks(T0 - 100), T0)
    assert abs(tr.get("n01").clock_offset - 100) < 1e-3
    wake_node = T0 - 100 + 3600 - EPOCH_2000  # node time of its next contact: 1 h from now
    tr.on_status("n01", {"state": "asleep", "mode": "NIGHT", "next_contact": wake_node, "hk_period": 1}, T0 + 1)
    info = tr.get("n01")
    assert info.state == ASLEEP and info.mode == "NIGHT"
    assert abs(info.next_contact - (T0 + 3600)) < 1e-3  # mapped to ground time
    for dt in (10, 600, 3600, 3625):
        tr.tick(T0 + dt)
        assert tr.get("n01").state == ASLEEP, dt
    tr.tick(T0 + 3631)
    assert tr.get("n01").state == LOST and "missed announced contact" in tr.get("n01").reason


def test_wakes_up_on_packets_or_birth():
    tr, _ = tracker()
    tr.on_status("n01", {"state": "asleep", "next_contact": T0 + 60 - EPOCH_2000}, T0)
    tr.on_packets("n01", ticks(T0 + 59), T0 + 59)
    assert tr.get("n01").state == ONLINE
    tr.on_status("n01", {"state": "asleep", "next_contact": 0}, T0 + 60)  # until further notice
    tr.tick(T0 + 10 * 86400)
    assert tr.get("n01").state == ASLEEP
    tr.on_status("n01", {"state": "online", "boot": 7}, T0 + 10 * 86400)
    assert tr.get("n01").state == ONLINE and tr.get("n01").boot == 7


def test_last_will_means_lost():
    tr, store = tracker()
    tr.on_packets("n01", ticks(T0), T0)
    tr.on_status("n01", {"state": "offline"}, T0 + 1)
    assert tr.get("n01").state == LOST and "last will" in tr.get("n01").reason
    assert store.events(kind="node_state")[0]["severity"] == "ERROR"


def test_duty_cycle_from_hk_next_contact_and_hk_period():
    tr, _ = tracker(grace=5)
    # HK says: next contact in 120 s, hk period 10 s -> silence up to 125 s is expected
    tr.on_packets("n01", ticks(T0), T0, hk={"hk_period": 10, "next_contact": 120, "boot_count": 3})
    info = tr.get("n01")
    assert info.hk_period == 10 and info.boot == 3
    tr.tick(T0 + 100)
    assert info.state == ONLINE
    tr.tick(T0 + 126)
    assert info.state == STALE


def test_a_retained_status_replayed_by_the_broker_is_no_contact():
    """Ingest reconnected and the broker replays each node's retained birth: a node the
    ground knows stays as it is (a LOST one does not come back ONLINE, its last contact does
    not move); one it knows nothing of yet learns what the node last said."""
    from ground.ingest import RETAINED

    t = NodeTracker("s", {"n01": 1.0, "n02": 1.0})
    t.on_packets("n01", 0, 1000.0)
    t.tick(1100.0)
    assert t.get("n01").state == LOST
    t.on_status("n01", {"state": "online", "boot": 3, RETAINED: True}, 1101.0)
    assert t.get("n01").state == LOST and t.get("n01").last_contact == 1000.0
    t.on_status("n02", {"state": "online", "boot": 3, RETAINED: True}, 1101.0)
    assert t.get("n02").state == ONLINE and "retained" in t.get("n02").reason
    t.on_status("n01", {"state": "online", "boot": 4}, 1102.0)  # a birth published now is contact
    assert t.get("n01").state == ONLINE and t.get("n01").last_contact == 1102.0

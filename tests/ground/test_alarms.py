"""Limits, persistence and the alarm lifecycle, fed with ParseResults built from packets."""

from __future__ import annotations

import numpy as np
import pytest

from ground.ops import AlarmError, AlarmManager, OpsStore, condition
from ground.testing import make_packet, parse_packets


def hk_table(*loop_lags: float, **kw: float):
    res, _ = parse_packets(*(make_packet("HK", loop_lag=v, free_heap=100000, **kw) for v in loop_lags))
    return res.tables[1]


@pytest.fixture
def mgr(tmp_path):
    return AlarmManager(OpsStore(tmp_path / "ops.db"))


def test_condition_vectorised_persistence():
    lv = np.array([0, 1, 1, 1, 2, 2, 2, 0], dtype=np.int8)
    cond, viol, red = condition(lv, 3, 0, 0)
    assert cond.tolist() == [0, -1, -1, 1, 1, 1, 2, 0]
    assert (viol, red) == (0, 0)
    # runs carry across batches
    cond, viol, red = condition(np.array([1, 1], dtype=np.int8), 3, 0, 0)
    assert cond.tolist() == [-1, -1] and viol == 2
    cond, _, _ = condition(np.array([1], dtype=np.int8), 3, viol, red)
    assert cond.tolist() == [1]


def test_persistence_then_raise_escalate_ack_clear(mgr):
    # loop_lag: yellow [0, 200], red [0, 2000], persistence 3
    mgr.check("s", "n01", hk_table(300, 300))
    assert mgr.active() == []
    assert mgr.level("s", "n01", 1, "loop_lag") == "yellow"
    mgr.check("s", "n01", hk_table(300))
    (a,) = mgr.active()
    assert (a["field"], a["severity"], a["state"]) == ("loop_lag", "yellow", "raised")
    mgr.acknowledge(a["id"], "alice")
    assert mgr.active()[0]["state"] == "acknowledged"
    # escalation to red after 3 red samples re-raises (needs a fresh ack)
    mgr.check("s", "n01", hk_table(2500, 2500, 2500))
    (a,) = mgr.active()
    assert (a["severity"], a["max_severity"], a["state"]) == ("red", "red", "raised")
    mgr.acknowledge(a["id"], "alice")
    mgr.check("s", "n01", hk_table(10))
    assert mgr.active() == []
    (closed,) = mgr.store.alarms(open_only=False)
    assert closed["state"] == "cleared" and closed["acked_by"] == "alice"
    msgs = [e["message"] for e in mgr.store.events(kind="alarm")][::-1]
    assert "raised" in msgs[0] and "escalated yellow→red" in msgs[2] and "cleared" in msgs[-1]


def test_returned_to_normal_waits_for_ack(mgr):
    mgr.check("s", "n01", hk_table(300, 300, 300, 10))  # raised then back in limits, one batch
    (a,) = mgr.active()
    assert a["state"] == "raised" and a["returned"] == 1
    mgr.acknowledge(a["id"])
    assert mgr.active() == []
    # a new violation opens a new alarm
    mgr.check("s", "n01", hk_table(300, 300, 300))
    (b,) = mgr.active()
    assert b["id"] != a["id"]


def test_shelve_unshelve_and_expiry(mgr):
    mgr.check("s", "n01", hk_table(0, cpu_temp=90))  # cpu_temp red > 85, persistence 1
    (a,) = mgr.active()
    assert a["field"] == "cpu_temp" and a["severity"] == "red"
    mgr.shelve(a["id"], 10, now=1000.0)
    assert mgr.active(now=1001.0) == []
    assert mgr.active(include_shelved=True, now=1001.0)[0]["shelved"]
    mgr.unshelve(a["id"])
    assert len(mgr.active()) == 1
    mgr.shelve(a["id"], 1, now=1000.0)
    mgr.expire_shelves(now=1061.0)
    assert len(mgr.active(now=1061.0)) == 1
    with pytest.raises(AlarmError):
        mgr.acknowledge(9999)


def test_alarms_survive_restart_and_nodes_are_separate(tmp_path):
    store = OpsStore(tmp_path / "ops.db")
    m1 = AlarmManager(store)
    m1.check("s", "n01", hk_table(0, cpu_temp=90))
    m1.check("s", "n02", hk_table(0, cpu_temp=20))
    assert [a["node"] for a in m1.active()] == ["n01"]
    store.close()
    m2 = AlarmManager(OpsStore(tmp_path / "ops.db"))
    (a,) = m2.active()
    m2.acknowledge(a["id"])
    assert m2.active()[0]["state"] == "acknowledged"


def test_nominal_batch_is_cheap_and_silent(mgr):
    t = hk_table(*([10.0] * 5000))
    assert mgr.check("s", "n01", t).shape == (5000, 4)
    assert mgr.active() == [] and mgr.store.events() == []


def test_ops_db_retention(tmp_path):
    store = OpsStore(tmp_path / "ops.db")
    store.event("test", "old", t=1000.0)
    store.event("test", "new", t=100 * 86400.0)
    assert store.prune(30, now=100 * 86400.0) == 1
    assert [e["message"] for e in store.events()] == ["new"]

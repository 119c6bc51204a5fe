"""The ground's custody sender (ground/custody.py) without a broker: what it states per APID
from what the archive committed, holes and how they close, giving up a hole, persistence
across a restart, and messages the node's own check (wire.ccsds.open_tc) accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ground.custody import CustodySender
from ground.ingest.testing import hk, packet
from ground.parse import Parser
from wire import ccsds, custody, topics
from wire.defs import APID_EVENT, APID_HK
from wire.inventory import Inventory, Node

KEY = bytes(range(32))


def _inv() -> Inventory:
    return Inventory("s1", [Node("n01", KEY, "pw")])


def _feed(cs: CustodySender, *pkts: bytes, node: str = "n01") -> None:
    res = Parser().parse(b"".join(pkts))
    cs.on_packets("s1", node, res, None, 0.0)


def _open(msg: bytes, last: int = 0) -> dict[int, int]:
    st, op, counter, a, b, _ = ccsds.open_tc(KEY, b"n01", msg, last, 0)
    assert st == ccsds.TC_OK and op == 0 and b - a == custody.ARGS_LEN, st
    assert ccsds.peek(msg)[1] == ccsds.CUSTODY_APID
    return custody.decode_args(msg[a:b])


def test_through_holes_and_messages(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes]] = []

    async def publish(t: str, p: bytes) -> None:
        sent.append((t, p))

    cs = CustodySender(_inv(), publish, tmp_path / "ops.db", give_up_s=3600)
    _feed(cs, *(hk(s) for s in range(10, 15)))
    _feed(cs, packet(APID_EVENT, 3))
    assert cs.view()["n01"]["through"] == {str(APID_HK): 14, str(APID_EVENT): 3}
    # 15 and 16 lost on the way: 17, 18 wait beyond the hole, custody stays at 14
    _feed(cs, hk(17), hk(18))
    assert cs.view()["n01"]["through"][str(APID_HK)] == 14 and cs.view()["n01"]["holes"] == {str(APID_HK): 2}
    assert asyncio.run(cs.send_due()) == 1
    topic, msg = sent[-1]
    assert topic == topics.topic("s1", "n01", topics.CMD)
    assert _open(msg) == {APID_HK: 14, APID_EVENT: 3}
    # confirmed: the counts the acknowledgements newly cover, HK 10..14 and EVENT 3
    assert cs.view()["n01"]["confirmed"] == 6
    # nothing new: nothing sent; a duplicate (already archived) is news again (the node re-sends)
    assert asyncio.run(cs.send_due()) == 0
    _feed(cs, hk(12))
    assert asyncio.run(cs.send_due()) == 1
    # the node re-sends from its custody point: the hole closes, custody jumps over 17, 18
    _feed(cs, hk(15), hk(16), hk(17))
    assert cs.view()["n01"]["through"][str(APID_HK)] == 18 and not cs.view()["n01"]["holes"]
    asyncio.run(cs.send_due())
    c1 = cs.nodes["n01"].counter
    assert cs.view()["n01"]["confirmed"] == 10  # + HK 15..18; the duplicate's message covered nothing new
    assert _open(sent[-1][1], c1 - 1)[APID_HK] == 18
    # a replay of the same message is refused by the node's check
    assert ccsds.open_tc(KEY, b"n01", sent[-1][1], c1, 0)[0] == ccsds.TC_REPLAY
    # unknown nodes and other sites get nothing
    _feed(cs, hk(1), node="zz")
    assert "zz" not in cs.view()
    cs.close()

    # a restarted ground: same points, a counter above the last one
    cs2 = CustodySender(_inv(), publish, tmp_path / "ops.db")
    assert cs2.view()["n01"]["through"] == {str(APID_HK): 18, str(APID_EVENT): 3}
    _feed(cs2, hk(19))
    asyncio.run(cs2.send_due())
    assert cs2.nodes["n01"].counter > c1
    assert _open(sent[-1][1], c1)[APID_HK] == 19
    assert cs2.view()["n01"]["confirmed"] == 1  # from the persisted point: only 19 is new
    cs2.close()


def test_wrap_and_giving_up_a_hole(tmp_path: Path) -> None:
    cs = CustodySender(_inv(), None, give_up_s=0.0)
    _feed(cs, hk(ccsds.SEQ_MOD - 2), hk(ccsds.SEQ_MASK), hk(0), hk(1))  # across the 14-bit wrap
    assert cs.view()["n01"]["through"][str(APID_HK)] == 1
    # packets 2..4 never come (the node dropped them): with give_up_s = 0 the hole is skipped
    _feed(cs, hk(5), hk(6))
    _feed(cs, hk(7))
    v = cs.view()["n01"]
    assert v["through"][str(APID_HK)] == 7 and v["skipped"] == 3, v
    cs.close()


def test_a_node_that_dropped_packets_says_so(tmp_path: Path) -> None:
    cs = CustodySender(_inv(), None, give_up_s=3600)
    _feed(cs, *(hk(s) for s in range(1, 6)))
    _feed(cs, hk(20), hk(21), hk(22))  # 6..19 missing
    hold = [0, 0, 0] + [0] * 8

    def status(apid_marks: dict[int, int]) -> dict:
        cu = list(hold)
        for a, s in apid_marks.items():
            cu[3 + a] = 0x8000 | s
        return {"state": "online", "custody": cu}

    # a statement behind the custody point, or beyond the newest archived count: ignored
    cs.on_status("s1", "n01", status({APID_HK: 3}), 0.0)
    cs.on_status("s1", "n01", status({APID_HK: 30}), 0.0)
    assert cs.view()["n01"]["through"][str(APID_HK)] == 5
    # dropped through 12 only: custody waits at 13 (the node still holds 13..19)
    cs.on_status("s1", "n01", status({APID_HK: 12}), 0.0)
    v = cs.view()["n01"]
    assert v["through"][str(APID_HK)] == 12 and v["skipped"] == 7, v
    # the node re-sends 13..19: custody closes up to 22
    _feed(cs, *(hk(s) for s in range(13, 20)))
    assert cs.view()["n01"]["through"][str(APID_HK)] == 22
    # dropped through 27, learned before the packets after the hole arrive: applied then
    cs.on_status("s1", "n01", status({APID_HK: 27}), 0.0)
    _feed(cs, hk(28), hk(29))
    v = cs.view()["n01"]
    assert v["through"][str(APID_HK)] == 29 and v["skipped"] == 7 + 5, v
    cs.close()


async def test_a_ground_sharing_its_subscription_sends_no_custody(broker, tmp_path: Path) -> None:
    """A worker of a shared group sees part of each node's packets: it must not judge custody."""
    from ground.service import GroundService

    for share, expect in ((None, True), ("grp", False)):
        g = GroundService(broker.url, _inv(), f"sqlite:///{tmp_path}/a-{share}.db", api_port=0, share=share,
                          client_id=f"g-custody-{share}")
        await g.start()
        try:
            assert (g.custody is not None) is expect, share
            assert ("custody" in g._health()) is expect
        finally:
            await g.stop()

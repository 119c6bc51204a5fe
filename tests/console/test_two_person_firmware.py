"""Role boundaries and the two-person rule end to end: the real ground, a real mosquitto and the
real node firmware on the MicroPython VM (node n04 of the ``base`` fixture).

A viewer cannot command; an operator cannot send a hazardous command; the commander who sends
one cannot approve it (nor can an operator); a second commander can, and the firmware then
verifies and executes it.  The audit (command row, history, event log) names each account.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ground.client import ApiError, GroundClient
from ground.testing import TEST_PASSWORD

pytestmark = pytest.mark.slow


def login(url: str, user: str) -> GroundClient:
    return GroundClient(url, user=user, password=TEST_PASSWORD)


async def test_two_person_hazardous_command_on_the_real_firmware(base, firmware_node: str) -> None:
    node = firmware_node
    async with login(base.url, "viewer") as viewer, login(base.url, "operator") as op, \
            login(base.url, "commander") as c1, login(base.url, "commander2") as c2:
        deadline = time.monotonic() + 120
        while not any(n["node"] == node and n["state"] == "ONLINE" for n in await viewer.nodes()):
            assert time.monotonic() < deadline, "the firmware node did not come ONLINE"
            await asyncio.sleep(0.5)
        with pytest.raises(ApiError) as e:
            await viewer.send_command(node, "PING")
        assert e.value.status == 403
        with pytest.raises(ApiError) as e:
            await op.send_command(node, "SET_MODE", {"mode": "NIGHT", "duration_s": 60}, confirm=True)
        assert e.value.status == 403 and "hazardous" in e.value.message
        row = await c1.send_command(node, "SET_MODE", {"mode": "NIGHT", "duration_s": 60}, confirm=True)
        assert row["stage"] == "AWAITING_APPROVAL" and row["user"] == "commander"
        for who in (c1, op):
            with pytest.raises(ApiError) as e:
                await who.approve_command(row["id"])
            assert e.value.status == 403
        await asyncio.sleep(1.0)
        assert (await c1.command(row["id"]))["stage"] == "AWAITING_APPROVAL"  # nothing went to the node
        approved = await c2.approve_command(row["id"])
        assert approved["approved_by"] == "commander2"
        done = await c1.command(row["id"], wait=60)
        assert done["stage"] == "EXECUTED", done
        assert [h[0] for h in done["history"]] == ["AWAITING_APPROVAL", "APPROVED", "QUEUED", "SENT", "ACCEPTED",
                                                   "EXECUTED"]
        # the node is in the commanded mode, as its own telemetry says
        deadline = time.monotonic() + 60
        while (await viewer.latest(node)).get("packets", {}).get("HK", {}).get("fields", {}).get(
                "mode", {}).get("text") != "NIGHT":
            assert time.monotonic() < deadline, "the firmware never reported mode NIGHT"
            await asyncio.sleep(1.0)
        # the audit log names the accounts, not anything a request body said
        events = [e for e in await viewer.events(kind="command", node=node, limit=50)
                  if e["data"].get("command") == row["id"]]
        by_stage = {e["data"]["stage"]: e for e in events}
        assert by_stage["AWAITING_APPROVAL"]["data"]["user"] == "commander"
        assert by_stage["APPROVED"]["data"]["user"] == "commander2"
        assert "approved by commander2" in by_stage["APPROVED"]["message"]
        assert by_stage["EXECUTED"]["data"]["stage"] == "EXECUTED"

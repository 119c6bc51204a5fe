"""Verified commanding: signing, queueing with validity windows, ACK-driven stages, audit.

    cmd = Commander(inventory, store, publish, reachable=tracker.reachable, light_time=1.28)
    row = await cmd.submit("n01", "SET_RATE", {"sensor": "HK", "period_ms": 500}, user="ops")
    done = await cmd.wait(row["id"], timeout=10)     # EXECUTED / REJECTED / TIMED_OUT ...
"""

from ground.commanding.commander import (
    ACCEPTED,
    CANCELLED,
    EXECUTED,
    EXPIRED,
    FAILED,
    FINAL,
    OPEN,
    QUEUED,
    REJECTED,
    SENT,
    TIMED_OUT,
    Commander,
    CommandError,
)

__all__ = ["ACCEPTED", "CANCELLED", "EXECUTED", "EXPIRED", "FAILED", "FINAL", "OPEN", "QUEUED", "REJECTED",
           "SENT", "TIMED_OUT", "CommandError", "Commander"]

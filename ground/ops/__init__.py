"""The operations core of the ground segment: alarms, node liveness, commanding, the ops database.

``Operations`` is the one object that ties them together: ingest calls it after each
archive commit, the client interface (``ground.api``) serves its state and its ``hub``.

    ops = Operations(inventory, OpsStore("ops.db"), publish=...)
    ops.alarms.active()                                  # open alarms, red first
    row = await ops.commander.submit("n01", "SET_RATE", {"sensor": "HK", "period_ms": 500}, user="ops")
    ops.nodes.get("n01").state                           # ONLINE / ASLEEP / STALE / LOST ...

Modules: ``operations`` (the sink + views), ``store`` (events, alarms, commands, TC
counters in SQLite), ``liveness`` (node states), ``alarms`` + ``limits`` (limit checking,
alarm lifecycle), ``commander`` (signed, queued, ACK-verified telecommands), ``hub``
(fan-out of live messages).
"""

from ground.errors import AlarmError, CommandError
from ground.ops.alarms import AlarmManager
from ground.ops.commander import (
    ACCEPTED,
    APPROVED,
    AWAITING_APPROVAL,
    CANCELLED,
    DENIED,
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
    SelfApproval,
)
from ground.ops.hub import Hub
from ground.ops.limits import LEVEL_NAMES, PacketLimits, condition, limits_for
from ground.ops.liveness import ASLEEP, LOST, ONLINE, STALE, UNKNOWN, NodeInfo, NodeTracker
from ground.ops.operations import Operations
from ground.ops.store import OpsStore

__all__ = ["ACCEPTED", "APPROVED", "ASLEEP", "AWAITING_APPROVAL", "CANCELLED", "DENIED", "EXECUTED", "EXPIRED", "FAILED", "FINAL", "LEVEL_NAMES", "LOST",
           "ONLINE", "OPEN", "QUEUED", "REJECTED", "SENT", "STALE", "TIMED_OUT", "UNKNOWN", "AlarmError",
           "AlarmManager", "CommandError", "Commander", "Hub", "NodeInfo", "NodeTracker", "Operations", "OpsStore",
           "PacketLimits", "SelfApproval", "condition", "limits_for"]

"""Limits, alarms and the operator event log of the ground segment.

    store = OpsStore("ops.db")
    alarms = AlarmManager(store)
    alarms.check(site, node, result.tables[1])     # HK table of one node
    alarms.active()                                 # open alarms, red first
"""

from ground.alarms.limits import LEVEL_NAMES, PacketLimits, condition, limits_for
from ground.alarms.manager import AlarmError, AlarmManager
from ground.alarms.store import OpsStore

__all__ = ["LEVEL_NAMES", "AlarmError", "AlarmManager", "OpsStore", "PacketLimits", "condition", "limits_for"]

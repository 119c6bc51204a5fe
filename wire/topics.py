# MQTT topic layout, shared by firmware, ground and simulator (MicroPython and CPython).
#
#   lunabase/<site>/<node>/tm      TM containers (packets back to back), QoS 1; ACK packets too
#   lunabase/<site>/<node>/status  retained JSON: birth / sleep announcement / last will
#   lunabase/<site>/<node>/cmd     TC packets for the node, QoS 1
#
# Status JSON (retained, QoS 1):
#   {"state": "online"|"asleep"|"offline", "mode": "DAY"|"NIGHT"|"EMERGENCY"|"SAFE",
#    "boot": <boot count>, "next_contact": <s since 2000 epoch, node clock, or 0>,
#    "hk_period": <s>, "dict_crc": <wire.defs.DICT_CRC>, "fw": "<version>"}
# "offline" is the last will (the broker publishes it when the node vanishes without a
# clean DISCONNECT); a node going to sleep publishes "asleep" with next_contact itself,
# then disconnects cleanly, which suppresses the will.
PREFIX = "lunabase"
TM = "tm"
STATUS = "status"
CMD = "cmd"


def topic(site, node, kind):
    return PREFIX + "/" + site + "/" + node + "/" + kind


def split(t):
    """(site, node, kind) of a lunabase topic, or None."""
    parts = t.split("/")
    if len(parts) != 4 or parts[0] != PREFIX:
        return None
    return parts[1], parts[2], parts[3]

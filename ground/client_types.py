"""The response shapes of the ground's client interface (docs/ground-api.md), as TypedDicts.

``GroundClient`` returns these; tests/ground/test_api_contract.py fails when a response
gains or loses a key, so a change of shape is a change here and in the doc, not a drift.
"""

from typing import Any, NotRequired, TypedDict

__all__ = ["Alarm", "CommandRow", "Event", "FieldValue", "Gap", "GapsView", "LatestPacket", "LatestView",
           "LinkCounters", "NodeTime", "NodeView", "PacketRow", "ParamHistory", "RefillNode", "RefillView",
           "SeismicView"]


class LinkCounters(TypedDict):
    """``GET /api/links`` per node, and a node's ``link``."""

    packets: int
    messages: int
    bytes: int
    packets_per_s: float
    bytes_per_s: float
    errors: dict[str, int]
    rejected_bytes: int
    gaps: int  # sequence gaps reported (every state; from the archive when the ground has one)
    missing: int  # packets still missing (open, refilling and lost gaps)
    duplicates: int
    collisions: int
    last_contact: float | None
    lost: NotRequired[int]  # packets of lost gaps (archive-backed grounds)
    gap_states: NotRequired[dict[str, int]]  # gaps by state: open, refilling, filled, lost


class Gap(TypedDict):
    """One sequence gap (``GET /api/gaps``; docs/ground-api.md "Gaps")."""

    id: int
    site: str
    node: str
    apid: int
    first: int  # first missing sequence count
    last: int  # last missing sequence count (modulo the 14-bit count)
    count: int
    missing: int  # of them, not archived yet
    filled: int
    t_lo: int  # time tags (ticks) of the packets around the gap
    t_hi: int
    detected: float
    updated: float
    state: str  # "open", "refilling", "filled", "lost"
    requests: int  # REPLAYs the ground sent for it
    last_request: float | None
    node_dropped: int | None  # lost: the node's own journal drop count (HK journal_dropped) then
    reason: str


class RefillNode(TypedDict):
    in_flight: int | None  # the REPLAY command in flight
    gap: int | None
    next_at: float | None
    failures: int
    waiting: str  # why nothing is requested now ("node ASLEEP", "command link down", ...)


class RefillView(TypedDict):
    enabled: bool
    requests: int
    filled: int
    lost: int
    max_per_minute: int
    nodes: dict[str, RefillNode]


class GapsView(TypedDict):
    """``GET /api/gaps``."""

    gaps: list[Gap]
    refill: RefillView


class NodeTime(TypedDict):
    """A node's clock as the ground's time keeper sees it (docs/ground-ops.md "Node time")."""

    synced: bool | None
    quality: str  # "synced", "drifting" (offset beyond 50 ms), "unsynced", "unknown"
    offset_s: float | None  # ground - node, min-filtered over live packets
    drift_ppm: float | None
    owlt_s: float | None  # measured one-way light time
    rtt_s: float | None
    syncs: int
    last_sync: float | None
    last_step_s: float | None
    residual_s: float | None
    pending: int | None  # command id of the sync in flight
    boot: int | None


class NodeView(TypedDict):
    """One node of ``GET /api/nodes`` (and of WebSocket ``node`` messages)."""

    site: str
    node: str
    state: str
    since: float
    reason: str
    last_contact: float | None
    last_packet: float | None
    status: str | None
    mode: str | None
    boot: int | None
    hk_period: float
    clock_offset: float | None
    next_contact: float | None
    next_contact_hk: float | None
    fw: str | None
    soc: float | None
    battery_voltage: float | None
    battery_temp: float | None
    electronics_temp: float | None
    surface_temp: float | None
    cpu_temp: float | None
    link: LinkCounters
    limit_state: str
    alarms: int
    time: NodeTime


class FieldValue(TypedDict, total=False):
    value: Any  # a number, or a string for text fields
    unit: str
    state: str  # ok / yellow / red
    text: str  # the enum name, for enum fields only


class LatestPacket(TypedDict):
    t: float
    ticks: int
    fields: dict[str, FieldValue]


class LatestView(TypedDict):
    """``GET /api/latest?node=``."""

    node: str
    packets: dict[str, LatestPacket]


class ParamHistory(TypedDict):
    """``GET /api/params``: columnar history of one parameter."""

    node: str
    packet: str
    field: str
    source: str
    count: int
    time: list[float]
    value: list[float]
    time_quality: NotRequired[list[str]]  # per point, from the archive: "synced", "corrected", ...


class Alarm(TypedDict):
    id: int
    site: str
    node: str
    packet: str
    field: str
    state: str
    severity: str
    max_severity: str
    value: float | None
    unit: str | None
    returned: int
    raised_at: float | None
    updated_at: float | None
    acked_by: str | None
    acked_at: float | None
    cleared_at: float | None
    shelved_until: float | None
    shelved_by: str | None
    shelved: bool


class Event(TypedDict):
    id: int
    t: float
    site: str | None
    node: str | None
    kind: str
    severity: str
    message: str
    data: dict[str, Any]


class CommandRow(TypedDict):
    id: int
    site: str
    node: str
    command: str
    opcode: int
    args: dict[str, Any]
    user: str
    submitted: float
    not_before: float | None
    not_after: float | None
    counter: int | None
    stage: str
    reason: str | None
    updated: float
    history: list[list[Any]]
    hazardous: bool
    confirmed: bool
    approved_by: str | None  # the second operator of a two-person command
    sent_at: NotRequired[float | None]  # on rows the commander still holds (submit, live), not in the audit log
    late: NotRequired[str]  # live rows: the stage of an ACK that came after the final stage (history: LATE_<stage>)


class PacketRow(TypedDict):
    """One of ``GET /api/packets``, newest first."""

    received: float
    apid: int
    packet: str
    seq: int
    ticks: int
    length: int
    hex: str
    fields: dict[str, Any]


class SeismicView(TypedDict, total=False):
    """``GET /api/seismic``: one list per axis (x, y, z) besides these."""

    node: str
    t0: float | None
    dt: float | None
    rate: float | None
    decimation: int
    x: list[float]
    y: list[float]
    z: list[float]

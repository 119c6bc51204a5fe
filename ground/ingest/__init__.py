"""Ingest: MQTT -> parse -> de-duplicate -> archive -> counters -> sinks.

    >>> from ground.archive import open_archive
    >>> from ground.ingest import IngestWorker
    >>> w = IngestWorker(open_archive("sqlite:///archive.db"), "127.0.0.1", port,
    ...                  username="ground", password=pw, sinks=[my_sink], share="ingest")
    >>> await w.run()            # until w.stop();  w.stats() -> plain dict of counters

``IngestSink`` is the interface the ops layer implements (on_packets / on_status /
on_rejected, called after the archive commit); ``Pipeline`` is the MQTT-independent
core used by replay and tests.
"""

from __future__ import annotations

from ground.ingest._pipeline import (
    BAD_STATUS,
    BAD_TOPIC,
    EMPTY,
    INTERNAL,
    OVERSIZED,
    QUARANTINE_REASONS,
    RETAINED,
    TOO_DEEP,
    UNKNOWN_NODE,
    IngestSink,
    Pipeline,
    Quarantined,
    check_status,
)
from ground.ingest._stats import Gap, LinkStats, SeqTracker, link_view
from ground.ingest._worker import IngestWorker, subscriptions

__all__ = [
    "RETAINED",
    "BAD_STATUS",
    "BAD_TOPIC",
    "EMPTY",
    "INTERNAL",
    "OVERSIZED",
    "QUARANTINE_REASONS",
    "TOO_DEEP",
    "UNKNOWN_NODE",
    "Gap",
    "IngestSink",
    "IngestWorker",
    "LinkStats",
    "Pipeline",
    "Quarantined",
    "SeqTracker",
    "check_status",
    "link_view",
    "subscriptions",
]

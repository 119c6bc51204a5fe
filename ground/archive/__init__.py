"""The telemetry archive: raw packet log (the truth), decoded tables, status history.

    >>> from ground.archive import open_archive
    >>> a = open_archive("sqlite:///var/lunabase/archive.db")   # or "postgresql://..."
    >>> with a.transaction() as tx:
    ...     fresh = tx.append_packets(site, node, parse_result, payload, received)
    >>> a.parameter("HK.free_heap", node="n01", t0=..., t1=...)  # {"node","time","value"}
    >>> a.table("SEISMIC", node="n01")["samples"]                  # int16 (n, 100, 3)

Exceptions: ArchiveError (cannot open/use the archive; ground/errors.py).  See ground/archive/_base.py
for the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ground.archive._base import (
    CORRECTED,
    ESTIMATED,
    KEY_COLLISION,
    OPEN_END,
    SYNCED,
    TIME_QUALITY,
    UNSYNCED,
    Archive,
    DecodedSpec,
    RawPacket,
    TimeCorrection,
    Transaction,
    correct_ticks,
)
from ground.errors import ArchiveError
from wire.dictionary import Dictionary
from wire.timetag import EPOCH_UNIX, ticks_to_unix, unix_to_ticks  # re-exported: the archive's time axis

__all__ = [
    "CORRECTED",
    "EPOCH_UNIX",
    "ESTIMATED",
    "KEY_COLLISION",
    "OPEN_END",
    "SYNCED",
    "TIME_QUALITY",
    "UNSYNCED",
    "TimeCorrection",
    "correct_ticks",
    "Archive",
    "ArchiveError",
    "DecodedSpec",
    "RawPacket",
    "Transaction",
    "open_archive",
    "ticks_to_unix",
    "unix_to_ticks",
]


def open_archive(url: str, dictionary: Dictionary | None = None, *, create: bool = True, **kw: Any) -> Archive:
    """Open (creating if needed) the archive at ``sqlite:///path`` or ``postgresql://...``.

    A bare path is taken as a SQLite file.  For PostgreSQL, ``schema=`` selects a schema.
    ``create=False`` refuses a SQLite file that does not exist yet (commands that only
    read: a mistyped path must not look like an empty archive).
    """
    if url.startswith(("postgresql://", "postgres://")):
        from ground.archive.postgres import PostgresArchive

        return PostgresArchive(url, dictionary, **kw)  # type: ignore[arg-type]
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if path.startswith("/") and not path.startswith("//"):
            path = path[1:]  # sqlite:///rel/path -> rel/path ; sqlite:////abs -> /abs
        elif path.startswith("//"):
            path = path[1:]
        if not path:
            raise ArchiveError(f"{url}: no file path (write sqlite:///archive.db)")
    elif "://" in url:
        raise ArchiveError(f"{url}: unknown archive scheme (use sqlite:///path or postgresql://...)")
    else:
        path = url
    if not create and not Path(path).exists():
        raise ArchiveError(f"{url}: no such archive file ({Path(path).resolve()}); "
                           "sqlite:///rel/path is relative, sqlite:////abs/path absolute")
    from ground.archive.sqlite import SQLiteArchive

    return SQLiteArchive(path, dictionary, **kw)  # type: ignore[arg-type]

"""Logging that a flood of bad input cannot turn into a flood of log lines.

A hostile or broken peer can make the same failure happen thousands of times a second;
logging each one (worse, with a traceback) fills the disk and hides everything else.

    >>> rl = RateLimitedLog(logging.getLogger("lunabase.ingest"), interval_s=10.0)
    >>> rl.warning("bad_status", "%s: status is not a JSON object", "moon/n01")
    # logged at most once per 10 s per reason; the next line logged for that reason ends
    # with "(+N similar suppressed in 10 s)".  rl.suppressed["bad_status"] counts them all.

``RateLimitFilter`` does the same for a logger we do not own (asyncio's "socket.accept()
out of system resource" under descriptor exhaustion), keyed by the record's format string.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: distinct reasons remembered; beyond this, all new reasons share one key (bounded memory)
MAX_KEYS = 512


class RateLimitedLog:
    """At most one record per ``interval_s`` per reason; counts what it held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}  # reason -> records held back since start

    def _key(self, reason: str) -> str:
        if reason in self._last or len(self._last) < MAX_KEYS:
            return reason
        return "(other)"

    def log(self, level: int, reason: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``reason`` was logged less than ``interval_s`` ago; True if logged."""
        key = self._key(reason)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += f" (+{held} similar suppressed in {self.interval_s:g} s)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, reason: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        return self.log(logging.WARNING, reason, msg, *args, exc_info=exc_info)

    def error(self, reason: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        return self.log(logging.ERROR, reason, msg, *args, exc_info=exc_info)


class RateLimitFilter(logging.Filter):
    """A logging filter passing at most one record per ``interval_s`` per format string."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}  # format string -> records held back since start

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:200]
        if key not in self._last and len(self._last) >= MAX_KEYS:
            key = "(other)"
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (+{held} similar suppressed)"
        return True


def limit_logger(name: str, interval_s: float = 10.0) -> RateLimitFilter:
    """Attach (once) a RateLimitFilter to logger ``name``; returns it."""
    lg = logging.getLogger(name)
    for f in lg.filters:
        if isinstance(f, RateLimitFilter):
            return f
    f = RateLimitFilter(interval_s)
    lg.addFilter(f)
    return f

"""Rate-limited logging: a few lines per cause and interval, then one line counting the rest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from . import defaults

__all__ = ["RateLimitedLog"]


class _Window:
    """What one cause logged in its current interval."""

    __slots__ = ("last", "level", "logged", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.logged = 0
        self.suppressed = 0
        self.level = logging.INFO
        self.last: tuple[str, tuple[Any, ...]] = ("", ())  # the last line held back


class RateLimitedLog:
    """Logs at most `burst` lines per cause in each `interval` seconds.

    For every event a peer can repeat at will (accept errors, closes, refused clients,
    bad frames): a flood of them must cost neither the disk nor the CPU. Lines over the
    limit are only counted; the first line of the cause after its interval is preceded
    by one "(K similar lines suppressed)" line that shows the last of them. A cause is
    any hashable value (e.g. ("accept", endpoint)); the table of causes is bounded.
    """

    def __init__(self, logger: logging.Logger, burst: int = defaults.LOG_BURST,
                 interval: float = defaults.LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._causes: dict[Hashable, _Window] = {}

    def log(self, level: int, cause: Hashable, msg: str, *args: Any) -> bool:
        """Log msg % args unless cause is over its limit; True if the line was written."""
        now = self.clock()
        window = self._causes.get(cause)
        if window is None or now - window.start >= self.interval:
            if window is not None:
                self._summary(window)
            elif len(self._causes) >= defaults.LOG_CAUSES_MAX:
                self._prune(now)
            window = self._causes[cause] = _Window(now)
        if window.logged < self.burst:
            window.logged += 1
            self.logger.log(level, msg, *args)
            return True
        window.suppressed += 1
        window.level = level
        window.last = (msg, args)
        return False

    def _summary(self, window: _Window) -> None:
        if window.suppressed:
            msg, args = window.last
            self.logger.log(window.level, msg + " (%d similar lines suppressed)",
                            *args, window.suppressed)

    def _prune(self, now: float) -> None:
        """Forget causes whose interval is over (reporting what they held back)."""
        for cause, window in list(self._causes.items()):
            if now - window.start >= self.interval:
                self._summary(window)
                del self._causes[cause]
        if len(self._causes) >= defaults.LOG_CAUSES_MAX:
            # Every cause is busy: start over rather than grow without bound.
            for window in self._causes.values():
                self._summary(window)
            self._causes.clear()

"""Backoff: capped exponential reconnect delays with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import defaults

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays for successive retries: initial * factor**n, capped, +-jitter; reset on success."""

    initial: float = defaults.RECONNECT_INITIAL
    maximum: float = defaults.RECONNECT_MAX
    factor: float = defaults.RECONNECT_FACTOR
    jitter: float = defaults.RECONNECT_JITTER
    attempts: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """The delay before the next attempt (and count it)."""
        base = min(self.maximum, self.initial * self.factor ** self.attempts)
        self.attempts += 1
        return max(0.0, min(self.maximum, base * (1 + random.uniform(-self.jitter, self.jitter))))

    def reset(self) -> None:
        self.attempts = 0

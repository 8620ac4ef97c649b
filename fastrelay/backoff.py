"""Backoff: capped exponential reconnect delays with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import defaults

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays for successive retries: initial, then x factor each time, capped, +-jitter.

    The current delay is kept and grown, never recomputed as initial * factor**attempts:
    that power overflows a float after about a thousand attempts (an hour of a peer
    being down), and a retry loop must be able to go on for ever.
    """

    initial: float = defaults.RECONNECT_INITIAL
    maximum: float = defaults.RECONNECT_MAX
    factor: float = defaults.RECONNECT_FACTOR
    jitter: float = defaults.RECONNECT_JITTER
    attempts: int = field(default=0, init=False)
    _base: float = field(default=0.0, init=False, repr=False)  # next delay before jitter

    def next_delay(self) -> float:
        """The delay before the next attempt (and count it)."""
        base = min(self.maximum, self._base if self.attempts else self.initial)
        self._base = min(self.maximum, base * self.factor)
        self.attempts += 1
        return max(0.0, min(self.maximum, base * (1 + random.uniform(-self.jitter, self.jitter))))

    def reset(self) -> None:
        """Start again from the initial delay (after a success that lasted)."""
        self.attempts = 0

"""Backoff and log rate limiting: delays never overflow, and repeated log lines are bounded."""

from __future__ import annotations

import random

import pytest

from fastrelay.backoff import Backoff


@pytest.mark.parametrize("factor", [1.5, 2.0, 10.0])
def test_backoff_keeps_its_cap_after_many_attempts(factor: float) -> None:
    # 1024 attempts at factor 2 is about 85 minutes of a peer down at the defaults:
    # `factor ** attempts` then overflows a float and the reconnect loop died with it.
    random.seed(1)
    backoff = Backoff(initial=0.1, maximum=0.5, factor=factor, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert backoff.attempts == 5000
    assert all(0.0 < d <= 0.5 for d in delays)
    assert min(delays[-100:]) >= 0.5 * 0.8 - 1e-9   # still at the cap, jitter aside


def test_backoff_grows_from_initial_and_starts_over_on_reset() -> None:
    backoff = Backoff(initial=0.1, maximum=10.0, factor=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == pytest.approx(0.1)

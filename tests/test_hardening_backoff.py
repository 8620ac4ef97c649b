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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_holds_back_a_flood_and_counts_it(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from fastrelay.ratelimit import RateLimitedLog

    clock = _Clock()
    logger = logging.getLogger("fastrelay.test.ratelimit")
    limited = RateLimitedLog(logger, burst=3, interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger=logger.name):
        written = [limited.log(logging.WARNING, "accept", "accept failed: %s", i)
                   for i in range(10000)]
        limited.log(logging.WARNING, "other", "another cause")   # has its own budget
        clock.now += 10.0
        limited.log(logging.WARNING, "accept", "accept failed: %s", "again")
    lines = [r.getMessage() for r in caplog.records]
    assert written.count(True) == 3
    assert lines == ["accept failed: 0", "accept failed: 1", "accept failed: 2",
                     "another cause",
                     "accept failed: 9999 (9997 similar lines suppressed)",
                     "accept failed: again"]


def test_rate_limited_log_keeps_its_table_of_causes_bounded() -> None:
    import logging

    from fastrelay import defaults
    from fastrelay.ratelimit import RateLimitedLog

    limited = RateLimitedLog(logging.getLogger("fastrelay.test.ratelimit2"), clock=_Clock())
    for i in range(defaults.LOG_CAUSES_MAX * 3):
        limited.log(logging.DEBUG, ("peer", i), "x")
    assert len(limited._causes) <= defaults.LOG_CAUSES_MAX

"""The hypothesis profile of the fuzz tests: "ci" (default) or "long" (FASTRELAY_FUZZ_PROFILE)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# FASTRELAY_FUZZ_PROFILE=long runs many more examples, random ones (printing the seed and
# a reproduction blob on failure); the default "ci" profile is derandomized: the same
# examples on every run, a few minutes in all.
PROFILE = os.environ.get("FASTRELAY_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise SystemExit(f"FASTRELAY_FUZZ_PROFILE={PROFILE!r}: expected 'ci' or 'long'")
LONG_FACTOR = 40
# Seconds per test (pytest-timeout): the slowest CI test takes ~45 s on a busy 2-core machine.
TEST_TIMEOUT = 3600 if PROFILE == "long" else 300


def fuzz_settings(examples: int) -> settings:
    """Settings of one fuzz test: `examples` under the CI profile, many more when long."""
    if PROFILE == "long":
        chosen = settings(max_examples=examples * LONG_FACTOR, print_blob=True)
    else:
        chosen = settings(max_examples=examples, derandomize=True, database=None)
    return settings(chosen, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

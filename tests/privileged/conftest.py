"""Fixtures of the privileged tests: a throwaway set of network namespaces per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from privileged.netns import Lab, tun_missing_reason

_count = itertools.count()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Namespaces for one test; removed afterwards, also when the test fails."""
    why = tun_missing_reason()
    if why:
        pytest.skip(why)
    lab = Lab(f"x{next(_count)}")
    try:
        lab.open()
        yield lab
    finally:
        lab.close()

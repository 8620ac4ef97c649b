"""Fixtures of the fuzz tests: the worker sandbox and the hypothesis profile (CI or long)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fuzz.profile import LONG_TIMEOUT, PROFILE
from fuzz.sandbox import Sandbox


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE == "long":
        for item in items:
            if item.get_closest_marker("fuzz") is not None:
                item.add_marker(pytest.mark.timeout(LONG_TIMEOUT))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The worker process that runs the cases (see worker.py); stopped after the session."""
    box = Sandbox()
    yield box
    box.close()

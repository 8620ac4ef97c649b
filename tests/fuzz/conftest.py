"""Fixtures of the fuzz tests: the worker sandbox, big socket buffers, per-test timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fuzz.profile import TEST_TIMEOUT
from fuzz.rig import ROOM_NEEDED, rig_capacity
from fuzz.sandbox import Sandbox


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The worker process that runs the cases (see worker.py); stopped after the session."""
    box = Sandbox()
    yield box
    box.close()


@pytest.fixture(scope="session")
def big_buffers() -> None:
    """Skip unless the rig's sockets can hold a whole case (UDP, where the kernel would drop)."""
    room = rig_capacity()
    if room < ROOM_NEEDED:
        pytest.skip(f"rig sockets hold {room} bytes, {ROOM_NEEDED} needed: run as root "
                    f"(SO_RCVBUFFORCE) or raise net.core.rmem_max to {ROOM_NEEDED // 2}")

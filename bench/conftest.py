"""Fixtures of the pytest-benchmark suite (`pytest bench/ --benchmark-only`)."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    """Sockets to close after the benchmark."""
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()

"""Fixtures and options of the pytest-benchmark suite (`pytest bench/ --benchmark-only`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # bench.check --short passes this: CI's gate must stay within seconds per case.
    parser.addoption("--bench-short", action="store_true",
                     help="fewer frames and rounds per case (seconds per case)")


@pytest.fixture(scope="session")
def short(request: pytest.FixtureRequest) -> bool:
    """True under --bench-short: cases scale their frame counts and rounds down."""
    return bool(request.config.getoption("--bench-short"))


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    """Sockets to close after the benchmark."""
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()

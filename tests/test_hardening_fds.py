"""Descriptors and socket paths: handed over once, closed once, never someone else's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from fastrelay._core import DatagramPort, StreamPort


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastrelay", *args], check=False,
                          capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_unixgram_remote_path_too_long_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The port constructor refused the address after taking the descriptor (its dealloc
    # closed it), then the endpoint closed it again: an EBADF traceback, or worse, the
    # close of a descriptor another thread had just been given.
    remote = "/tmp/" + "x" * 200
    result = _run(f"unixgram:{tmp_path}/l.sock:{remote}", "127.0.0.1:1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Bad file descriptor" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "path too long" in lines[0], result.stderr
    assert not os.path.exists(f"{tmp_path}/l.sock")


def test_adopt_closes_what_a_failed_port_left_open_and_nothing_else() -> None:
    from fastrelay.endpoints.base import adopt

    # Refused before the port took the descriptor: still ours, adopt closes it.
    a, b = socket.socketpair()
    b.close()
    fd = a.detach()
    with pytest.raises(ValueError):
        adopt([fd], lambda: StreamPort(fd, "t", queue_bytes=-1))
    assert not _is_open(fd)
    # Refused after (the peer address): the port closed it; closing again would fail.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    fd = s.detach()
    with pytest.raises(ValueError, match="too long"):
        adopt([fd], lambda: DatagramPort(fd, "t", family=socket.AF_UNIX, peer="/" + "x" * 300))
    assert not _is_open(fd)

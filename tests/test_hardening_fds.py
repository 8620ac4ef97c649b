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


# -- unix socket files: never remove another instance's ------------------------------------

def _listening_unix(path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    from peers import track

    sock = track(socket.socket(socket.AF_UNIX, kind))
    sock.bind(path)
    if kind == socket.SOCK_STREAM:
        sock.listen(4)
    return sock


def _inode(path: str) -> int:
    return os.stat(path).st_ino


@pytest.mark.parametrize("kind", ["unix-listen", "unixgram"])
def test_live_socket_of_another_instance_is_left_alone(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    # The stale-socket removal unlinked whatever socket was at the path, a running
    # instance's included, and took its place.
    path = str(tmp_path / "s.sock")
    sock_kind = socket.SOCK_STREAM if kind == "unix-listen" else socket.SOCK_DGRAM
    other = _listening_unix(path, sock_kind)
    inode = _inode(path)
    target = f"unix-listen:{path}" if kind == "unix-listen" else f"unixgram:{path}"
    proc = subprocess.Popen([sys.executable, "-m", "fastrelay", target, "127.0.0.1:1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the relay took over another instance's socket") from None
    assert proc.returncode == 1 and "Address already in use" in err, err
    assert _inode(path) == inode
    other.close()


def test_stale_socket_is_still_replaced(tmp_path, relay_process) -> None:  # type: ignore[no-untyped-def]
    from conftest import wait_until

    path = str(tmp_path / "s.sock")
    _listening_unix(path).close()          # the file stays, nobody serves it: stale

    def served() -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            return probe.connect_ex(path) == 0
    proc = relay_process("-l", f"unix:{path}")
    wait_until(served, 10, "the relay to listen in the stale socket's place")
    assert proc.proc.poll() is None


def test_exit_removes_the_socket_only_if_it_is_still_ours(tmp_path, relay_process) -> None:  # type: ignore[no-untyped-def]
    from conftest import wait_until

    path = str(tmp_path / "s.sock")
    proc = relay_process("-l", f"unix:{path}")
    wait_until(lambda: os.path.exists(path), 10, "the relay's socket")
    os.unlink(path)                        # another instance replaced it meanwhile
    other = _listening_unix(path)
    inode = _inode(path)
    assert proc.stop() == 0
    assert os.path.exists(path) and _inode(path) == inode
    other.close()


def test_control_socket_of_a_running_daemon_is_not_taken_over(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from peers import free_port

    from fastrelay.control import query

    ctl = str(tmp_path / "ctl.sock")
    text = '[daemon]\ncontrol = "{ctl}"\n[hub.h]\nlisten = "127.0.0.1:{port}"\n'
    first = daemon_process(text.format(ctl=ctl, port=free_port()))
    inode = _inode(ctl)
    second = daemon_process(text.format(ctl=ctl, port=free_port()), ready=False)
    assert second.wait(20) == 1
    assert f"control socket {ctl}: cannot listen: Address already in use" in second.log
    assert _inode(ctl) == inode and '"links"' in query(ctl)
    assert first.proc.poll() is None


# -- a tap opened by a worker thread after its start was cancelled -------------------------

def test_tap_opened_after_its_start_was_cancelled_is_closed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import threading
    import time

    from fastrelay.endpoints.tap import TapEndpoint
    from fastrelay.relay import Relay, RelayOptions
    from fastrelay.tapdev import TapDevice
    from fastrelay.targets import parse_target

    r, w = os.pipe()                       # stand-ins for the tap's queue descriptors
    opening, release = threading.Event(), threading.Event()

    def slow_open(self: TapEndpoint, offload: bool) -> TapDevice:
        opening.set()
        release.wait(5)
        return TapDevice("tapx", [r, w], 0, created=True)
    monkeypatch.setattr(TapEndpoint, "_open", slow_open)
    relay = Relay([parse_target("tap:tapx")], RelayOptions(), point_to_point=False)

    async def main() -> None:
        start = asyncio.get_running_loop().create_task(relay.endpoints[0].start())
        await asyncio.to_thread(opening.wait, 5)
        start.cancel()                     # e.g. the daemon stops the link meanwhile
        with pytest.raises(asyncio.CancelledError):
            await start
        release.set()
        deadline = time.monotonic() + 5
        while (_is_open(r) or _is_open(w)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    try:
        asyncio.run(main())
        assert not _is_open(r) and not _is_open(w), "the tap opened for a cancelled start leaked"
    finally:
        relay.hub.close()
        for fd in (r, w):
            if _is_open(fd):
                os.close(fd)

"""Review: an on_close callback that re-enters the hub during forward() or poll() must not crash it.

Hub(on_close=...) calls Python in the middle of the data path: a port that fails while a
batch is being forwarded is removed, and on_close runs before forward() returns. A
callback may do what the Hub API allows (close another port, close the hub); the reader
that is still running, and poll() with the rest of its events, must then stop touching
what was closed. Each case runs in a child interpreter, since the failure is a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A broadcast frame of 64 bytes (the hub floods it to every other port).
PRELUDE = textwrap.dedent("""
    import socket, struct
    from fastrelay._core import Hub, DatagramPort, StreamPort
    FRAME = b"\\xff" * 6 + b"\\x02\\x00\\x00\\x00\\x00\\x01" + b"\\x08\\x00" + b"x" * 50

    def failing_stream_port(name):
        '''A stream port whose peer is gone: its next send fails (EPIPE) inside forward().'''
        mine, peer = socket.socketpair()
        mine.setblocking(False)
        return StreamPort(mine.detach(), name), peer
""")

ALLOCATORS = pytest.mark.parametrize("malloc", ["pymalloc", "debug"])


def run_child(body: str, malloc: str) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + body in a child; malloc "debug" fills freed memory (most uses after
    free then crash or abort)."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONMALLOC=malloc)
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], env=env,
                          check=False,
                          capture_output=True, text=True, timeout=60)


def assert_survived(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0 and "survived" in proc.stdout, (
        f"child exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-2000:]}")


@ALLOCATORS
def test_datagram_source_closed_by_on_close_during_forward(malloc: str) -> None:
    """A full recvmmsg batch (64 datagrams) makes the reader loop for another read after
    forward(); on_close closed the source meanwhile, so its hub is None by then."""
    proc = run_child("""
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.setblocking(False)
        addr = rx.getsockname()
        src = DatagramPort(rx.detach(), "A", family=socket.AF_INET, peer=("127.0.0.1", 9))
        dst, dst_peer = failing_stream_port("B")
        closed = []
        def on_close(port, reason, fault):
            closed.append((port.name, reason))
            if port is dst:
                src.close()
        hub = Hub(on_close=on_close)
        hub.add(src)
        hub.add(dst)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(100):
            tx.sendto(FRAME, addr)
        dst_peer.close()  # after src became ready: dst fails in forward(), not on its own event
        hub.poll()
        hub.poll()
        assert closed and closed[0][0] == "B", closed
        assert src.closed and dst.closed
        print("survived", closed)
    """, malloc)
    assert_survived(proc)


@ALLOCATORS
def test_stream_source_closed_by_on_close_during_forward(malloc: str) -> None:
    """A full stream read (STREAM_READ bytes) makes read_stream() loop again after
    forward(); on_close closed the source meanwhile."""
    proc = run_child("""
        mine, peer = socket.socketpair()
        mine.setblocking(False)
        src = StreamPort(mine.detach(), "A")
        dst, dst_peer = failing_stream_port("B")
        closed = []
        def on_close(port, reason, fault):
            closed.append((port.name, reason))
            if port is dst:
                src.close()
        hub = Hub(on_close=on_close)
        hub.add(src)
        hub.add(dst)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        record = struct.pack(">I", len(FRAME)) + FRAME
        peer.sendall(record * (400_000 // len(record)))  # more than one read takes
        dst_peer.close()
        hub.poll()
        hub.poll()
        assert closed and closed[0][0] == "B", closed
        assert src.closed and dst.closed
        print("survived", closed)
    """, malloc)
    assert_survived(proc)


def test_hub_closed_by_on_close_during_poll() -> None:
    """poll() keeps the ports removed during it alive until it returns (their events still
    name them); Hub.close() from a callback must not let them go early.

    pymalloc only: the debug allocator's fill makes a freed port's fd negative, which
    poll() skips, so there the early free goes unseen; with pymalloc the refcount taken on
    the freed port frees it a second time (glibc aborts: "double free or corruption")."""
    proc = run_child("""
        closed = []
        def on_close(port, reason, fault):
            closed.append(port.name)
            hub.close()
        hub = Hub(on_close=on_close)
        peers = []
        for name in ("X", "Y", "Z"):
            mine, peer = socket.socketpair()
            mine.setblocking(False)
            hub.add(StreamPort(mine.detach(), name))  # only the hub holds the port
            peers.append(peer)
        for peer in peers:
            peer.close()  # every port has a hang-up event in the same poll()
        hub.poll()
        assert closed == ["X"], closed
        assert hub.ports == []
        print("survived", closed)
    """, "pymalloc")
    assert_survived(proc)


def test_poll_from_inside_poll_is_refused() -> None:
    """A nested poll() would overwrite the events the outer one is still handling (and free
    the ports it keeps alive): it raises instead, and the outer poll() ends cleanly."""
    proc = run_child("""
        errors = []
        def on_close(port, reason, fault):
            try:
                hub.poll()
            except RuntimeError as exc:
                errors.append(str(exc))
        hub = Hub(on_close=on_close)
        peers = []
        for name in ("X", "Y", "Z"):
            mine, peer = socket.socketpair()
            mine.setblocking(False)
            hub.add(StreamPort(mine.detach(), name))
            peers.append(peer)
        for peer in peers:
            peer.close()
        hub.poll()
        assert hub.ports == [] and len(errors) == 3, (hub.ports, errors)
        assert "inside Hub.poll()" in errors[0]
        print("survived", errors)
    """, "pymalloc")
    assert_survived(proc)

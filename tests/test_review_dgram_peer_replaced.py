"""Review: a unixgram port whose fixed peer is replaced while frames wait must not spin the hub.

A unix datagram port keeps its socket connect()ed to its fixed peer so that EPOLLOUT means
"the peer has room". When that peer goes away (a guest restarted: a new socket at the same
path), the first send fails with ECONNREFUSED and the kernel disconnects the socket; from
then on an unconnected unix datagram socket is always writable, whatever the new peer's
queue holds. A backlog left waiting for EPOLLOUT then wakes the hub without end while the
new peer does not read yet (a guest still booting).
"""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path

from fastrelay._core import DatagramPort, Hub

FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + b"x" * 100
SENT = 40


def wakeups(hub: Hub, seconds: float) -> int:
    """How often the hub's descriptor is ready with events during `seconds` (handled each time)."""
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if select.select([hub.fileno()], [], [], 0.05)[0] and hub.poll():
            count += 1
    return count


def test_replaced_unixgram_peer_does_not_spin(tmp_path: Path) -> None:
    qpath, rpath = str(tmp_path / "peer"), str(tmp_path / "relay")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(qpath)  # never reads: its queue (net.unix.max_dgram_qlen) fills
    relay_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    relay_sock.bind(rpath)
    relay_sock.setblocking(False)
    src_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src_sock.bind(("127.0.0.1", 0))
    src_sock.setblocking(False)
    src_addr = src_sock.getsockname()
    hub = Hub()
    port = DatagramPort(relay_sock.detach(), "unixgram", family=socket.AF_UNIX, peer=qpath)
    src = DatagramPort(src_sock.detach(), "udp", family=socket.AF_INET, peer=("127.0.0.1", 9))
    hub.add(port)
    hub.add(src)
    new_peer = None
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(SENT):
            tx.sendto(FRAME, src_addr)
        wakeups(hub, 0.3)
        assert port.queued_frames > 0, port.stats()  # the peer's queue is full: frames wait
        peer.close()
        os.unlink(qpath)
        new_peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        new_peer.bind(qpath)  # the restarted guest, not reading yet
        spins = wakeups(hub, 0.5)
        assert spins < 50, f"hub woke {spins} times in 0.5 s for a peer that reads nothing"
        # Once the new peer reads, what waited reaches it; every frame is accounted for.
        new_peer.setblocking(False)
        got = 0
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                while new_peer.recv(65536):
                    got += 1
            except BlockingIOError:
                pass
            wakeups(hub, 0.05)
            stats = port.stats()
            if not stats["queued_frames"] and stats["tx_frames"] + stats["drop_send"] \
                    + stats["drop_queue"] == SENT:
                break
        stats = port.stats()
        assert stats["queued_frames"] == 0, stats
        assert stats["tx_frames"] + stats["drop_send"] + stats["drop_queue"] == SENT, stats
        assert got > 0
    finally:
        tx.close()
        peer.close()
        if new_peer is not None:
            new_peer.close()
        hub.close()

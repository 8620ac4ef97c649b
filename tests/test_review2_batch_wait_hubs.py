"""Batch wait with several hubs on one loop (a daemon's links): one hub's waits never hold up another's frames."""

from __future__ import annotations

import select
import statistics
import threading
import time

from peers import DgramPeer, make_frame
from test_batch_wait import paced_sender, two_port_hub

# Long enough that a wait does not depend on how busy the machine is; 64 of them (what
# one poll() may wait in all) are 64 ms, far above what a frame of another hub may wait.
WAIT = 1e-3
PINGS = 30


def ping(peer: DgramPeer, sent_at: list[float]) -> None:
    """PINGS frames numbered from 0 (bytes 14..17), 10 ms apart; their send times."""
    for i in range(PINGS):
        time.sleep(0.01)
        sent_at.append(time.monotonic())
        peer.send([make_frame(100, 0)[:14] + i.to_bytes(4, "big") + bytes(82)])


def test_a_streaming_hub_does_not_delay_another_hubs_frames() -> None:
    """A daemon runs every link's hub on one event loop: while hub A waits for more of a
    stream's frames, hub B's frames wait in B's socket too. A frame of B must wait no
    more than about one of A's waits, not all the waits A's poll() may take."""
    a1, a2, b1, b2 = DgramPeer(), DgramPeer(), DgramPeer(), DgramPeer()
    hub_a, pa, _ = two_port_hub(a1, a2, WAIT)
    hub_b, _, _ = two_port_hub(b1, b2, WAIT)
    # Like the event loop: whichever hub's descriptor is readable is polled.
    loop = select.epoll()
    loop.register(hub_a.fileno(), select.EPOLLIN)
    loop.register(hub_b.fileno(), select.EPOLLIN)
    hubs = {hub_a.fileno(): hub_a, hub_b.fileno(): hub_b}
    sender = paced_sender(a1.peer, 20000, 0.0002)
    delays: list[float] = []
    sent_at: list[float] = []
    try:
        # The stream is under way (hub A waits) before the first ping.
        deadline = time.monotonic() + 10
        while hub_a.waits < 3 * 64 and time.monotonic() < deadline:
            for fd, _ in loop.poll(0.05):
                hubs[fd].poll()
        assert hub_a.waits >= 3 * 64, "hub A never settled into waiting for its stream"
        # Sparse pings through hub B (so B itself has no reason to wait), sent by another
        # thread at any moment, as another process would: often while A waits.
        b2.sock.setblocking(False)
        pinger = threading.Thread(target=ping, args=(b1, sent_at))
        pinger.start()
        while len(delays) < PINGS and time.monotonic() < deadline + 10:
            for fd, _ in loop.poll(0.001):
                hubs[fd].poll()
            try:
                while True:
                    got = b2.sock.recv(1 << 17)
                    delays.append(time.monotonic() - sent_at[int.from_bytes(got[14:18], "big")])
            except BlockingIOError:
                pass
        pinger.join()
    finally:
        sender.kill()
        sender.wait(5)
        loop.close()
        hub_a.close()
        hub_b.close()
    assert len(delays) == PINGS and pa.stats()["rx_frames"] > 0
    # One wait of A, plus a round, plus scheduling on a busy machine; LINGER_ROUNDS (then
    # 64) waits before the fix.
    assert statistics.median(delays) < 3 * WAIT, [round(d * 1e3, 2) for d in delays]

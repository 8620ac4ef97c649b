"""What the hub guarantees under uneven peers, and counters that add up (issue 9).

The sentence under test (README): "A source is paused only while every other port is
congested: point to point never drops; in a hub a port slower than the fastest peer loses
its own frames (counted as drop_queue) and never slows the others."
"""

from __future__ import annotations

import socket
import threading
import time

from conftest import wait_until
from peers import LOOP4, StreamPeer, free_port, make_frame

FRAME = 1000
RECORD = 4 + FRAME  # one frame in the stream framing, as a backlog holds it


def slow_client(port: int, rcvbuf: int = 4096) -> StreamPeer:
    """A client with a small receive buffer (set before connecting, so the window is
    small too): the relay feels its pace at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((LOOP4, port))
    return StreamPeer(sock)


class SlowReader:
    """Reads a peer on a thread, 4 KB at a time with a pause between reads, until told to
    hurry; collects the frames."""

    def __init__(self, peer: StreamPeer, pause: float = 0.002) -> None:
        self.peer = peer
        self.pause = pause
        self.frames: list[bytes] = []
        self.hurry = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock = self.peer.sock
        sock.settimeout(0.1)
        try:
            while not self.stop.is_set():
                try:
                    data = sock.recv(4096 if not self.hurry.is_set() else 1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return
                self.frames += self.peer.rx.feed_data(data)
                if not self.hurry.is_set():
                    time.sleep(self.pause)
        except (OSError, ValueError) as exc:  # reported by join()
            self.error = exc

    def join(self) -> None:
        self.stop.set()
        self.thread.join(5)
        if self.error is not None:
            raise self.error


def port_of(r, peer: StreamPeer) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The stats of the hub port serving peer (named after the peer's address)."""
    suffix = f":{peer.sock.getsockname()[1]}"
    found = r.call(lambda: [p.stats() for p in r.relay.hub.ports if p.name.endswith(suffix)])
    assert len(found) == 1, found
    return found[0]  # type: ignore[no-any-return]


def in_order_subsequence(got: list[bytes], sent: list[bytes]) -> bool:
    """Every frame in got was sent, whole, and they came in the order sent."""
    index = {frame: i for i, frame in enumerate(sent)}
    positions = [index.get(frame, -1) for frame in got]
    return -1 not in positions and positions == sorted(positions)


def test_point_to_point_with_a_slow_reader_loses_nothing(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    p1, p2 = free_port(), free_port()
    r = inprocess_relay(f"listen:{LOOP4}:{p1}", f"listen:{LOOP4}:{p2}")
    a = StreamPeer.connect((LOOP4, p1))
    b = slow_client(p2)
    wait_until(lambda: len(r.call(lambda: r.relay.hub.ports)) == 2, what="both sides")
    frames = [make_frame(FRAME, i) for i in range(5000)]   # 5 MB, more than every buffer
    reader = SlowReader(b, pause=0.001)
    a.send(frames)
    try:
        wait_until(lambda: len(reader.frames) >= len(frames), timeout=30, what="all frames")
    finally:
        reader.join()
    assert reader.frames == frames
    stats = [port_of(r, a), port_of(r, b)]
    assert all(s["drop_queue"] == 0 for s in stats), stats


def test_hub_slow_reader_loses_only_its_own_frames(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    """One sender, one fast reader, one slow reader: the fast one gets everything at the
    sender's pace; the slow one gets an in-order part and the rest is counted as its
    drop_queue. For each receiving port, frames offered == tx_frames + drop_queue +
    drop_send + queued_frames, while frames are queued (D15c) and after the queues drained."""
    port = free_port()
    queue = 256 * 1024
    r = inprocess_relay(listen=f"{LOOP4}:{port}", queue_bytes=queue)
    sender = StreamPeer.connect((LOOP4, port))
    fast = StreamPeer.connect((LOOP4, port))
    slow = slow_client(port)
    wait_until(lambda: len(r.call(lambda: r.relay.hub.ports)) == 3, what="three clients")
    frames = [make_frame(FRAME, i) for i in range(10000)]   # 10 MB: far past the slow bound
    reader = SlowReader(slow)
    snapshots: list[list[tuple[str, dict[str, int], int]]] = []
    done = threading.Event()

    def watch() -> None:
        # Each snapshot is taken on the relay's loop between two polls: the counters of
        # every port at one instant, with the frames offered to each (read by the others).
        def snap() -> list[tuple[str, dict[str, int], int]]:
            ports = r.relay.hub.ports
            total = sum(p.rx_frames for p in ports)
            return [(p.name, p.stats(), total - p.rx_frames) for p in ports]
        # Until the transfer is over, and then on while the slow port still holds frames
        # (its reader drains 2 MB/s, so for a while): on a fast machine the whole transfer
        # can take less than one snapshot interval. Bounded in count and time.
        deadline = time.monotonic() + 40
        while len(snapshots) < 400 and time.monotonic() < deadline:
            snapshots.append(r.call(snap))
            if done.is_set() and (caught(snapshots) >= 3 or time.monotonic() > done_at[0] + 2):
                return
            time.sleep(0.01)

    def caught(snaps: list[list[tuple[str, dict[str, int], int]]]) -> int:
        return sum(1 for snap in snaps for name, st, _ in snap
                   if name.endswith(slow_name) and st["queued_bytes"] >= 4 * RECORD)

    slow_name = f":{slow.sock.getsockname()[1]}"
    done_at = [0.0]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sender.send(frames)
    try:
        assert fast.recv(len(frames), timeout=30) == frames   # all, in order, not slowed
    finally:
        done_at[0] = time.monotonic()
        done.set()
        watcher.join(10)
        reader.hurry.set()
    # Let the slow reader drain what its port still holds, then read the final counters.
    wait_until(lambda: port_of(r, slow)["queued_bytes"] == 0, timeout=10, what="drained")
    deadline = time.monotonic() + 10
    while (len(reader.frames) + port_of(r, slow)["drop_queue"] < len(frames)
           and time.monotonic() < deadline):
        time.sleep(0.05)
    reader.join()
    s = port_of(r, slow)
    assert s["drop_queue"] > 0, "the slow reader lost nothing: the test did not load it"
    assert in_order_subsequence(reader.frames, frames)
    assert len(reader.frames) + s["drop_queue"] == len(frames), s
    assert port_of(r, fast)["drop_queue"] == 0

    # While frames were queued for the slow port, were they already counted as sent?
    busy = [(name, st, offered) for snap in snapshots for name, st, offered in snap
            if name.endswith(slow_name) and st["queued_bytes"] >= 4 * RECORD]
    assert busy, "no snapshot caught the slow port with frames queued"
    for name, st, offered in busy:
        unaccounted = offered - st["tx_frames"] - st["drop_queue"] - st["drop_send"]
        # queued_bytes / RECORD frames wait; one of them may be a frame begun (partly sent).
        assert st["queued_bytes"] // RECORD <= unaccounted <= -(-st["queued_bytes"] // RECORD), \
            f"{name}: offered {offered}, counted {st}"
    # The port's own count of what waits, and the invariant once everything drained.
    hub_ports = r.call(lambda: [(p.name, p.stats(), p.queued_frames) for p in r.relay.hub.ports])
    for name, st, queued in hub_ports:
        if st["rx_frames"]:
            continue  # the sender: offered nothing
        assert queued == 0
        assert st["tx_frames"] + st["drop_queue"] + st["drop_send"] + queued == len(frames), \
            f"{name}: {st}"

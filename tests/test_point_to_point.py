"""Point-to-point links through the relay, byte-exact, for every stream and datagram pairing."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest
from conftest import wait_bound
from peers import (LOOP4, DgramPeer, StreamListener, StreamPeer, exchange_windowed, free_port,
                   make_frame, random_frames, track)

UDP_MAX = 65507  # largest IPv4 UDP payload


def udp_pair(relay, family=socket.AF_INET, host=LOOP4):  # type: ignore[no-untyped-def]
    """Two UDP guests A and B with a relay between them; returns (a, b, relay_ports)."""
    a, b = DgramPeer(family, host), DgramPeer(family, host)
    la, lb = free_port(family, socket.SOCK_DGRAM), free_port(family, socket.SOCK_DGRAM)
    h = f"[{host}]" if ":" in host else host
    r = relay(f"{la}:{h}:{a.port}", f"{lb}:{h}:{b.port}")
    wait_bound(la, socket.SOCK_DGRAM, host)
    wait_bound(lb, socket.SOCK_DGRAM, host)
    a.peer, b.peer = (host, la), (host, lb)
    return a, b, r


def test_udp_exact_random_sizes_both_ways(relay) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = udp_pair(relay)
    frames = random_frames(2000, 14, UDP_MAX, seed=1)
    frames[0] = make_frame(14)
    frames[1] = make_frame(UDP_MAX, 1)
    assert exchange_windowed(a.send, b.recv, frames) == frames
    back = random_frames(500, 14, UDP_MAX, seed=2)
    assert exchange_windowed(b.send, a.recv, back) == back
    a.expect_silence(0.1)  # nothing echoed to the sender


def test_udp_runt_and_oversized_datagrams_are_dropped_not_fatal(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    a, b, r = udp_pair(inprocess_relay)
    a.sock.sendto(b"x" * 13, a.peer)  # shorter than an Ethernet header
    good = random_frames(10, 60, 1500, seed=3)
    assert exchange_windowed(a.send, b.recv, good) == good
    port = r.relay.hub.ports[0]
    assert port.drop_invalid == 1 and port.rx_frames == 10


def tcp_pair(relay, family=socket.AF_INET, host=LOOP4):  # type: ignore[no-untyped-def]
    """Two `socket,listen=` guests that the relay connects to."""
    la, lb = StreamListener(family, host), StreamListener(family, host)
    h = f"[{host}]" if ":" in host else host
    r = relay(f"{h}:{la.port}", f"{h}:{lb.port}")
    return la.accept(), lb.accept(), r


def send_while_receiving(src: StreamPeer, dst: StreamPeer, frames: list[bytes]) -> list[bytes]:
    sender = threading.Thread(target=src.send, args=(frames,))
    sender.start()
    try:
        return dst.recv(len(frames), timeout=30)
    finally:
        sender.join(30)


def test_tcp_exact_random_sizes_both_ways(relay) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = tcp_pair(relay)
    frames = random_frames(3000, 14, 65535, seed=4)
    frames[-1] = make_frame(69632, 3000)  # qemu's largest
    assert send_while_receiving(a, b, frames) == frames
    back = random_frames(1000, 14, 65535, seed=5)
    assert send_while_receiving(b, a, back) == back
    a.expect_silence(0.1)


def test_tcp_frames_split_at_every_byte_are_reassembled(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = tcp_pair(inprocess_relay)
    frames = random_frames(20, 14, 200, seed=6)
    data = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        a.send_raw(data[i:i + 1])
    assert b.recv(len(frames)) == frames


def test_mixed_udp_to_tcp(relay) -> None:  # type: ignore[no-untyped-def]
    u = DgramPeer()
    lu = free_port(kind=socket.SOCK_DGRAM)
    lt = StreamListener()
    relay(f"{lu}:{LOOP4}:{u.port}", f"{LOOP4}:{lt.port}")
    t = lt.accept()
    wait_bound(lu, socket.SOCK_DGRAM)
    u.peer = (LOOP4, lu)
    frames = random_frames(500, 14, UDP_MAX, seed=7)
    assert exchange_windowed(u.send, t.recv, frames) == frames
    back = random_frames(500, 14, UDP_MAX, seed=8)
    assert exchange_windowed(t.send, u.recv, back) == back


def test_burst_of_equal_frames_leaves_as_separate_datagrams(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    """A TCP burst of equal-sized frames goes out through UDP GSO, still one frame per datagram."""
    u = DgramPeer()
    lu = free_port(kind=socket.SOCK_DGRAM)
    lt = StreamListener()
    r = inprocess_relay(f"{lu}:{LOOP4}:{u.port}", f"{LOOP4}:{lt.port}")
    t = lt.accept()
    frames = [make_frame(1000, i) for i in range(300)] + [make_frame(400, 300)]
    t.send(frames)
    assert u.recv(len(frames)) == frames
    udp = [p for p in r.call(lambda: r.relay.hub.ports) if hasattr(p, "gso")][0]
    assert udp.gso and udp.gso_messages > 0
    assert udp.gso_messages < len(frames) // 2


def test_two_relays_linked_by_udp_split_coalesced_runs(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    """Relay 1 sends GSO runs; relay 2 (UDP_GRO) receives them coalesced and splits them."""
    l1, l2 = StreamListener(), StreamListener()
    u1, u2 = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    r2 = inprocess_relay(f"{u2}:{LOOP4}:{u1}", f"{LOOP4}:{l2.port}")
    r1 = inprocess_relay(f"{LOOP4}:{l1.port}", f"{u1}:{LOOP4}:{u2}")
    a, b = l1.accept(), l2.accept()
    frames = [make_frame(1400, i) for i in range(400)] + [make_frame(100 + i, 400 + i)
                                                          for i in range(50)]
    for i in range(0, len(frames), 150):  # bursts that fit the UDP socket buffers
        a.send(frames[i:i + 150])
        assert b.recv(len(frames[i:i + 150])) == frames[i:i + 150]
    sender = [p for p in r1.call(lambda: r1.relay.hub.ports) if hasattr(p, "gso")][0]
    receiver = [p for p in r2.call(lambda: r2.relay.hub.ports) if hasattr(p, "gro")][0]
    assert sender.gso_messages > 0
    assert receiver.gro and receiver.gro_messages > 0
    assert receiver.drop_invalid == 0


def test_ipv6_udp_and_tcp(relay) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = udp_pair(relay, socket.AF_INET6, "::1")
    frames = random_frames(200, 14, 9000, seed=9)
    assert exchange_windowed(a.send, b.recv, frames) == frames
    c, d, _ = tcp_pair(relay, socket.AF_INET6, "::1")
    assert send_while_receiving(c, d, frames) == frames


def test_hostname_is_accepted(relay) -> None:  # type: ignore[no-untyped-def]
    la, lb = StreamListener(), StreamListener()
    relay(f"localhost:{la.port}", f"localhost:{lb.port}")
    a, b = la.accept(), lb.accept()
    frames = random_frames(50, 60, 1500, seed=10)
    assert send_while_receiving(a, b, frames) == frames


def test_unix_stream_and_datagram(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A: qemu stream client of our unix listener; B: qemu dgram unix peer.
    listen_path, local, remote = (str(tmp_path / n) for n in ("hub.sock", "relay.dg", "guest.dg"))
    b = DgramPeer(path=remote, peer=local)
    relay(f"unix-listen:{listen_path}", f"unixgram:{local}:{remote}")
    a = StreamPeer.connect(listen_path, socket.AF_UNIX)
    frames = random_frames(300, 14, 65000, seed=11)
    assert exchange_windowed(a.send, b.recv, frames) == frames
    assert exchange_windowed(b.send, a.recv, frames) == frames


def test_unix_stream_client(relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A passt-like unix stream server that the relay connects to, and a TCP guest.
    path = str(tmp_path / "passt.sock")
    server = track(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    server.bind(path)
    server.listen(1)
    lt = StreamListener()
    relay(f"unix:{path}", f"{LOOP4}:{lt.port}")
    server.settimeout(5)
    a = StreamPeer(server.accept()[0])
    b = lt.accept()
    frames = random_frames(300, 14, 65535, seed=12)
    assert send_while_receiving(a, b, frames) == frames


def test_point_to_point_exits_zero_when_a_side_ends(relay_process) -> None:  # type: ignore[no-untyped-def]
    la, lb = StreamListener(), StreamListener()
    proc = relay_process(f"{LOOP4}:{la.port}", f"{LOOP4}:{lb.port}")
    a, b = la.accept(), lb.accept()
    a.close()
    assert proc.wait(10) == 0
    b.expect_closed()


def test_stdio_raw_frames(relay_process) -> None:  # type: ignore[no-untyped-def]
    u = DgramPeer()
    lu = free_port(kind=socket.SOCK_DGRAM)
    proc = relay_process("-", f"{lu}:{LOOP4}:{u.port}", stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    wait_bound(lu, socket.SOCK_DGRAM)
    u.peer = (LOOP4, lu)
    frame = make_frame(100, 1)
    proc.proc.stdin.write(frame)
    proc.proc.stdin.flush()
    assert u.recv(1) == [frame]
    back = make_frame(300, 2)
    u.send([back])
    assert proc.proc.stdout.read(len(back)) == back
    proc.proc.stdin.close()  # end of input ends a point-to-point link
    assert proc.wait(10) == 0


@pytest.mark.parametrize("queue", ["0", "64k"])
def test_small_queues_drop_whole_frames_never_framing(inprocess_relay, queue) -> None:  # type: ignore[no-untyped-def]
    """With a queue smaller than one read, frames may drop, but what arrives is intact."""
    from conftest import wait_until

    from fastrelay.cli import _size

    la, lb = StreamListener(), StreamListener()
    r = inprocess_relay(f"{LOOP4}:{la.port}", f"{LOOP4}:{lb.port}", queue_bytes=_size(queue))
    a, b = la.accept(), lb.accept()
    frames = [make_frame(1500, i) for i in range(3000)]
    got: list[bytes] = []
    sender = threading.Thread(target=a.send, args=(frames,))
    sender.start()
    try:
        # Read while the relay works, until it has taken in every frame and queues nothing.
        def settled() -> bool:
            try:
                got.extend(b.recv(1, timeout=0.02))
            except AssertionError:
                pass
            ports = r.call(lambda: r.relay.hub.ports)
            return (sum(p.rx_frames for p in ports) == len(frames)
                    and all(p.queued_bytes == 0 for p in ports))
        wait_until(settled, timeout=30, what="the relay to take in every frame")
    finally:
        sender.join(30)
    while True:  # what is still in flight in the kernel
        try:
            got += b.recv(1, timeout=0.3)
        except AssertionError:
            break
    index = {f: i for i, f in enumerate(frames)}
    positions = [index[f] for f in got]  # KeyError: a corrupted frame
    assert positions == sorted(positions)  # in order, none twice
    dropped = r.call(lambda: sum(p.drop_queue for p in r.relay.hub.ports))
    assert len(got) + dropped == len(frames)


def test_sigterm_stops_reading_then_drains_promptly(relay_process) -> None:  # type: ignore[no-untyped-def]
    """A sender that never pauses must not hold a graceful stop up to its deadline.

    The receiver is slow, so the relay always has frames queued for it: only a relay
    that stops reading the sender when told to stop can empty its queue before the
    2 s drain deadline.
    """
    import signal
    import time

    la, lb = StreamListener(), StreamListener()
    proc = relay_process(f"{LOOP4}:{la.port}", f"{LOOP4}:{lb.port}")
    a, b = la.accept(), lb.accept()
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    stop = threading.Event()

    def flood() -> None:  # bounded: at most 20 s of 1500-byte frames
        deadline = time.monotonic() + 20
        chunk = b"".join(len(f).to_bytes(4, "big") + f
                         for f in [make_frame(1500, i) for i in range(100)])
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                a.sock.sendall(chunk)
            except OSError:
                return

    def slow_read(seconds: float) -> None:  # ~3 MB/s
        until = time.monotonic() + seconds
        b.sock.settimeout(0.05)
        while time.monotonic() < until and proc.proc.poll() is None:
            try:
                if not b.sock.recv(16384):
                    return
            except (socket.timeout, ConnectionResetError):
                pass
            time.sleep(0.005)

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        slow_read(0.5)  # traffic flows and the relay's queue for b fills
        began = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        slow_read(10)
        took = time.monotonic() - began
        assert proc.proc.wait(5) == 0
        assert took < 1.0, f"stop took {took:.2f}s (the drain deadline is 2 s)"
    finally:
        stop.set()
        sender.join(30)

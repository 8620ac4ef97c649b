"""Hub mode: fan-out without echo, isolation of bad, slow and departing clients."""

from __future__ import annotations

import socket
import threading

from conftest import wait_bound, wait_until
from peers import LOOP4, DgramPeer, StreamPeer, free_port, make_frame, random_frames


def start_hub(relay, *targets: str):  # type: ignore[no-untyped-def]
    port = free_port()
    r = relay(*targets, listen=f"{LOOP4}:{port}")
    return port, r


def clients(port: int, n: int) -> list[StreamPeer]:
    return [StreamPeer.connect((LOOP4, port)) for _ in range(n)]


def wait_ports(r, n: int) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: len(r.call(lambda: r.relay.hub.ports)) == n, what=f"{n} ports")


def test_every_frame_reaches_every_other_client_never_its_sender(relay) -> None:  # type: ignore[no-untyped-def]
    u = DgramPeer()
    lu = free_port(kind=socket.SOCK_DGRAM)
    port, _ = start_hub(relay, f"{lu}:{LOOP4}:{u.port}")
    wait_bound(lu, socket.SOCK_DGRAM)
    u.peer = (LOOP4, lu)
    peers = clients(port, 3)
    # Make sure all three joined before sending (accepts race the first frames).
    for i, p in enumerate(peers):
        p.send([make_frame(60, 1000 + i)])
        for q in peers:
            if q is not p:
                q.recv(1)
        u.recv(1)
    for i, p in enumerate(peers):
        frames = random_frames(200, 14, 65535, seed=20 + i)
        p.send(frames)
        for q in peers:
            if q is not p:
                assert q.recv(len(frames)) == frames
        assert [len(f) for f in u.recv(len(frames))] == [len(f) for f in frames]
    frames = random_frames(100, 14, 9000, seed=30)
    u.send(frames)
    for q in peers:
        assert q.recv(len(frames), timeout=10) == frames
    for p in peers:
        p.expect_silence(0.2)  # nothing came back to a sender
    u.expect_silence(0.1)


def test_bad_length_drops_only_that_client(relay_process) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = relay_process("-l", f"{LOOP4}:{port}")
    a, b, bad = clients(port, 3)
    a.send([make_frame(60)])
    b.recv(1)
    bad.recv(1)
    good = make_frame(100, 1, src=b"\x02\x00\x00\x00\x00\xbd")  # another guest than a's
    bad.send_raw(len(good).to_bytes(4, "big") + good + (70000).to_bytes(4, "big") + b"x" * 100)
    # The frame before the bad length still arrives; then the bad client is closed.
    assert a.recv(1) == [good] and b.recv(1) == [good]
    bad.expect_closed()
    frames = random_frames(500, 14, 1500, seed=40)
    a.send(frames)
    assert b.recv(len(frames)) == frames
    assert proc.proc.poll() is None
    err = proc.stderr
    assert "bad frame length 70000 (longest allowed 69632)" in err
    assert err.count("\n") == 1, err  # one line, naming the client
    assert "tcp client 127.0.0.1:" in err


def test_runt_is_dropped_and_the_stream_goes_on(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    """A length below 14 still says where the next record starts: drop it, keep the client."""
    port = free_port()
    r = inprocess_relay(listen=f"{LOOP4}:{port}")
    a, sender = clients(port, 2)
    wait_ports(r, 2)
    before, after = make_frame(60, 1), make_frame(70, 2)
    runts = b"".join(n.to_bytes(4, "big") + b"y" * n for n in range(14))
    sender.send_raw(len(before).to_bytes(4, "big") + before + runts
                    + len(after).to_bytes(4, "big") + after)
    assert a.recv(2) == [before, after]
    wait_ports(r, 2)
    wait_until(lambda: r.call(lambda: r.relay.totals()["drop_invalid"]) == 14,
               what="14 runts counted")


def test_stalled_reader_does_not_stall_the_others(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    r = inprocess_relay(listen=f"{LOOP4}:{port}", queue_bytes=256 * 1024)
    a, b, stalled = clients(port, 3)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_ports(r, 3)
    # 60 MB: far more than the stalled client's socket buffers and backlog can hold.
    frames = [make_frame(1500, i) for i in range(40000)]
    sender = threading.Thread(target=a.send, args=(frames,))
    sender.start()
    try:
        assert b.recv(len(frames), timeout=60) == frames  # all of them, in order
    finally:
        sender.join(60)
    ports = r.call(lambda: {p.name: p.stats() for p in r.relay.hub.ports})
    stalled_stats = [s for s in ports.values() if s["drop_queue"]]
    assert len(stalled_stats) == 1, ports  # only the stalled client lost frames
    assert stalled_stats[0]["queued_bytes"] <= 256 * 1024 + 69636
    # The stalled client still gets a well-framed stream once it reads again.
    got = stalled.recv(10)
    assert all(len(f) == 1500 for f in got)


def test_departing_client_is_removed_and_hub_keeps_running(relay) -> None:  # type: ignore[no-untyped-def]
    port, _ = start_hub(relay)
    a, b, c = clients(port, 3)
    a.send([make_frame(60)])
    b.recv(1)
    c.recv(1)
    c.close()
    frames = random_frames(100, 60, 1500, seed=50)
    a.send(frames)
    assert b.recv(len(frames)) == frames
    d = StreamPeer.connect((LOOP4, port))
    # connect() completes in the kernel before the hub has accepted d: frames sent before
    # that never reach it. A frame from d reaching the others shows d is a port now.
    d.send([make_frame(60)])
    a.recv(1)
    b.recv(1)
    b.send(frames)
    assert a.recv(len(frames)) == frames
    assert d.recv(len(frames)) == frames


def test_dual_stack_listener_accepts_ipv4_and_ipv6(relay_process) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    relay_process("-l", str(port))  # netrelay form: every address, both families
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect(("::1", port), socket.AF_INET6)
    hello = make_frame(60)
    a.send([hello])
    assert b.recv(1) == [hello]
    frames = random_frames(50, 14, 1500, seed=60)
    b.send(frames)
    assert a.recv(len(frames)) == frames


def test_stdin_at_eof_closes_the_stdio_port_without_spinning(relay_process) -> None:  # type: ignore[no-untyped-def]
    """netrelay's hub spins a core once stdin ends; ours drops the stdio port and idles."""
    import subprocess
    import time

    port = free_port()
    proc = relay_process("-vv", "-l", f"{LOOP4}:{port}", "-", stdin=subprocess.PIPE)
    proc.proc.stdin.close()  # end of input at once
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    time.sleep(1.0)

    def cpu_seconds() -> float:
        with open(f"/proc/{proc.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in ticks

    before = cpu_seconds()
    time.sleep(1.0)
    assert cpu_seconds() - before < 0.2  # idle, not spinning
    frames = random_frames(20, 60, 1500, seed=70)
    a.send(frames)
    assert b.recv(len(frames)) == frames  # the hub runs on
    assert proc.proc.poll() is None
    assert "stdio: end of input" in proc.stderr

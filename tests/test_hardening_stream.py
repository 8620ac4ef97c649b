"""Stream ports under hostile or early peers: runt lengths, a lone peer that leaves (issue 9)."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import wait_bound, wait_until
from peers import LOOP4, StreamPeer, free_port, make_frame

# Every length a stream may carry that is too short for an Ethernet header (14 bytes).
RUNT_LENGTHS = range(14)


def runts() -> bytes:
    """One complete record (header + that many bytes) of every runt length 0..13."""
    return b"".join(n.to_bytes(4, "big") + bytes([0x80 + n]) * n for n in RUNT_LENGTHS)


def record(frame: bytes) -> bytes:
    return len(frame).to_bytes(4, "big") + frame


def hub_ports(r) -> list[dict[str, int]]:  # type: ignore[no-untyped-def]
    return r.call(lambda: [p.stats() for p in r.relay.hub.ports])


def test_runt_records_are_dropped_and_the_stream_kept_in_a_hub(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    """D11: a runt length leaves the framing intact (its bytes are all there): drop and
    count the record, keep the connection, deliver the frames around it in order."""
    port = free_port()
    r = inprocess_relay(listen=f"{LOOP4}:{port}")
    a, b = StreamPeer.connect((LOOP4, port)), StreamPeer.connect((LOOP4, port))
    wait_until(lambda: len(hub_ports(r)) == 2, what="two clients")
    before, after = make_frame(100, 1), make_frame(100, 2)
    a.send_raw(record(before) + runts() + record(after))
    assert b.recv(2) == [before, after]
    # The same connection still carries frames, both ways.
    later = make_frame(1500, 3)
    a.send([later])
    assert b.recv(1) == [later]
    b.send([later])
    assert a.recv(1) == [later]
    sender = [s for s in hub_ports(r) if s["rx_frames"] == 3]
    assert len(sender) == 1 and sender[0]["drop_invalid"] == len(RUNT_LENGTHS), hub_ports(r)


@pytest.mark.parametrize("where", ["alone", "split"])
def test_runt_record_does_not_end_a_point_to_point_link(relay_process, where: str) -> None:  # type: ignore[no-untyped-def]
    """D11: point to point without --reconnect exits when a side ends; a runt is not an end."""
    p1, p2 = free_port(), free_port()
    proc = relay_process(f"listen:{LOOP4}:{p1}", f"listen:{LOOP4}:{p2}")
    wait_bound(p1, socket.SOCK_STREAM)
    wait_bound(p2, socket.SOCK_STREAM)
    a = StreamPeer.connect((LOOP4, p1))
    b = StreamPeer.connect((LOOP4, p2))
    hello = make_frame(60, 0)
    a.send([hello])
    assert b.recv(1) == [hello]
    good = make_frame(200, 1)
    runt = (5).to_bytes(4, "big") + b"r" * 5
    if where == "alone":
        a.send_raw(runt)
        a.flush()
        a.send([good])
    else:  # the runt's header cut in two reads, the frame after it in the same read
        a.send_raw(runt[:2])
        a.flush()
        a.send_raw(runt[2:] + record(good))
    assert b.recv(1) == [good]
    assert proc.proc.poll() is None, proc.stderr
    b.send([good])
    assert a.recv(1) == [good]


@pytest.mark.parametrize("leave", ["shutdown", "close"])
def test_lone_peer_that_leaves_still_delivers_its_frames(inprocess_relay, leave: str) -> None:  # type: ignore[no-untyped-def]
    """D15f: a lone port is not read (nobody to take its frames); when its peer sends and
    then leaves, the end must not make the relay read (and lose) those frames before the
    other side is there to take them."""
    p1, p2 = free_port(), free_port()
    r = inprocess_relay(f"listen:{LOOP4}:{p1}", f"listen:{LOOP4}:{p2}")
    a = StreamPeer.connect((LOOP4, p1))
    wait_until(lambda: len(hub_ports(r)) == 1, what="the first side's port")
    frames = [make_frame(1000, i) for i in range(20)]
    a.send(frames)
    a.flush()
    if leave == "shutdown":
        a.sock.shutdown(socket.SHUT_WR)
    else:
        a.close()
    # Time for the relay to notice the end of a's input (it used to read the frames into
    # nothing, then end the link).
    time.sleep(0.5)
    assert r.thread.is_alive(), "the relay ended before its second side connected"
    b = StreamPeer.connect((LOOP4, p2))
    assert b.recv(len(frames)) == frames


def test_half_sent_frames_draw_on_the_budget_and_past_it_close_the_client() -> None:
    """A client that sends part of a frame holds that part between reads, charged to the
    relay's QueueBudget; when the budget cannot grant it, that client is closed (its
    stream cannot be followed past a forgotten half frame) and the others go on."""
    import socket as sk
    import time

    from fastrelay._core import Hub, QueueBudget, StreamPort

    closed: list[str] = []
    hub = Hub(on_close=lambda port, reason, fault: closed.append(reason),
              budget=QueueBudget(12288))
    pairs = [sk.socketpair() for _ in range(3)]
    ports = []
    for i, (ours, _) in enumerate(pairs):
        ours.setblocking(False)
        ports.append(StreamPort(ours.detach(), f"client {i}"))
        hub.add(ports[-1])
    frame = b"\x02" * 60 + b"\x01" * 9940              # 10,000 bytes
    half = len(frame).to_bytes(4, "big") + frame[:5000]  # an incomplete record
    try:
        pairs[0][1].sendall(half)                    # 8 KiB of carry: granted
        for _ in range(20):
            hub.poll()
            time.sleep(0.005)
        assert hub.budget.used == 8192 and not closed
        pairs[1][1].sendall(half)                    # another 8 KiB: the budget is spent
        for _ in range(20):
            hub.poll()
            time.sleep(0.005)
        assert closed == ["memory budget spent: cannot keep the 5004 bytes of an "
                          "incomplete frame"], closed
        assert ports[1].closed and not ports[0].closed
        pairs[0][1].sendall(frame[5000:])            # the first client completes its frame
        pairs[2][1].setblocking(False)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 4 + len(frame) and time.monotonic() < deadline:
            hub.poll()
            try:
                got += pairs[2][1].recv(65536)
            except BlockingIOError:
                time.sleep(0.005)
        assert got == len(frame).to_bytes(4, "big") + frame
        for _ in range(5):
            hub.poll()
        assert hub.budget.used == 0                  # the carry went back
    finally:
        hub.close()
        for _, theirs in pairs:
            theirs.close()

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

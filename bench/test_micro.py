"""Micro-benchmarks of the compiled core: reassembly, hub fan-out, the UDP batch path."""

from __future__ import annotations

import socket

import pytest

from bench.streams import recorded_stream, socketpairs
from fastrelay._core import DatagramPort, FrameReassembler, Hub, StreamPort

# About 1 MB, so a round runs from cache as a freshly read chunk would: a bigger stream
# measured memory bandwidth, which every other process on the machine shares.
STREAM_FRAMES = 1000
STREAM = recorded_stream(STREAM_FRAMES)


def test_reassembler_recorded_stream(benchmark) -> None:  # type: ignore[no-untyped-def]
    """FrameReassembler over a recorded stream fed in 64 KiB chunks (MB/s in extra_info)."""
    chunks = [STREAM[i:i + 65536] for i in range(0, len(STREAM), 65536)]

    def run() -> int:
        r = FrameReassembler()
        return sum(r.feed_count(c) for c in chunks)

    frames = benchmark(run)
    assert frames == STREAM_FRAMES
    benchmark.extra_info["MB_per_s"] = len(STREAM) / benchmark.stats.stats.min / 1e6


@pytest.mark.parametrize("ports", [2, 4, 8])
def test_hub_fanout_per_batch(benchmark, closing, short, ports: int) -> None:  # type: ignore[no-untyped-def]
    """One 64 KiB read of 64-byte frames fanned out to ports-1 stream peers (ns/frame)."""
    pairs = socketpairs(ports)
    for a, b in pairs:
        closing += [a, b]
    hub = Hub()
    for i, (_, b) in enumerate(pairs):
        hub.add(StreamPort(b.fileno(), f"p{i}", owns_fd=False))
    src = pairs[0][0]
    frame = b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5" + b"\x00" * 50
    chunk = (len(frame).to_bytes(4, "big") + frame) * (65536 // (4 + len(frame)))
    n_frames = 65536 // (4 + len(frame))

    def setup() -> None:
        for a, _ in pairs[1:]:  # drain what the previous round delivered
            a.setblocking(False)
            try:
                while a.recv(1 << 22):
                    pass
            except BlockingIOError:
                pass
        src.sendall(chunk)

    rounds = 100 if short else 300
    benchmark.pedantic(hub.poll, setup=setup, rounds=rounds, warmup_rounds=5)
    delivered = sum(p.tx_frames for p in hub.ports)
    assert delivered >= rounds * n_frames * (ports - 1)
    benchmark.extra_info["ns_per_frame"] = benchmark.stats.stats.min / n_frames * 1e9
    hub.close()


def test_udp_batch_path(benchmark, closing, short) -> None:  # type: ignore[no-untyped-def]
    """64 datagrams of 1500 bytes: recvmmsg, hub, sendmmsg with GSO, in one poll()."""
    def udp() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        closing.append(s)
        return s

    guest_a, guest_b, relay_a, relay_b = udp(), udp(), udp(), udp()
    guest_b.setblocking(False)
    hub = Hub()
    hub.add(DatagramPort(relay_a.fileno(), "a", peer=guest_a.getsockname(), owns_fd=False))
    hub.add(DatagramPort(relay_b.fileno(), "b", peer=guest_b.getsockname(), owns_fd=False))
    frame = b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5" + b"\x00" * 1486
    target = relay_a.getsockname()

    def setup() -> None:
        try:
            while guest_b.recv(1 << 16):
                pass
        except BlockingIOError:
            pass
        for _ in range(64):
            guest_a.sendto(frame, target)

    rounds = 100 if short else 300
    benchmark.pedantic(hub.poll, setup=setup, rounds=rounds, warmup_rounds=5)
    port_b = hub.ports[1]
    assert port_b.tx_frames >= rounds * 64
    benchmark.extra_info["ns_per_frame"] = benchmark.stats.stats.min / 64 * 1e9
    hub.close()

"""Inputs of the micro-benchmarks: a recorded-like qemu stream and socket pairs."""

from __future__ import annotations

import random
import socket
import struct

# A guest TCP transfer seen on the wire: full-size segments and the ACKs coming back, with
# a few ARP/ICMP-sized frames; seeded, so every run sees the same "recorded" stream.
_MIX = [(1514, 0.62), (66, 0.33), (98, 0.03), (42 + 18, 0.02)]


def recorded_stream(n_frames: int = 20000, seed: int = 7) -> bytes:
    """A deterministic qemu stream (4-byte lengths + frames) with a realistic size mix."""
    rng = random.Random(seed)
    sizes = rng.choices([s for s, _ in _MIX], weights=[w for _, w in _MIX], k=n_frames)
    return b"".join(struct.pack(">I", n) + bytes([i & 0xFF]) * n for i, n in enumerate(sizes))


def socketpairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    pairs = []
    for _ in range(n):
        a, b = socket.socketpair()
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        b.setblocking(False)
        pairs.append((a, b))
    return pairs

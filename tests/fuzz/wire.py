"""What the fuzz cases send and what the relay must deliver: payloads, headers and the models.

Imported by both sides: the worker (tests/fuzz/worker.py) builds the bytes it sends from a
case, and the test recomputes from the same case what each sink must receive. A case is a
plain tuple-and-dataclass value, so it crosses to the worker by pickle.
"""

from __future__ import annotations

import functools
import random
import struct
from dataclasses import dataclass, field

# The data plane's limits (fastrelay/dataplane/consts.pxi, tap.pyx), written down again on
# purpose: a test that imported them could not notice that they changed.
FRAME_MIN = 14
FRAME_MAX = 69632
DGRAM_MAX = 65536
UDP4_MAX = 65507              # payload of one IPv4 UDP datagram
UDP6_MAX = 65527              # payload of one IPv6 UDP datagram (no jumbograms)
GSO_KERNEL_SEGMENTS = 128     # UDP_MAX_SEGMENTS of current kernels (64 before 5.x)
VNET_HDR_LEN = 10
TAP_FRAME_MAX = 65536 + 1024  # longest frame one TapPort read takes
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2

# Stream lengths that are dropped and counted while the stream goes on (issue 9, defect 11):
# the framing is intact, the record is just too short to be Ethernet. Any other length
# outside FRAME_MIN..max_frame closes the port after the frames before it.
RUNT_LENGTHS = range(0, FRAME_MIN)  # 0..13: the framing is intact, the record dropped


POOL = 1 << 18


@functools.lru_cache(maxsize=4)
def _pool(seed: int) -> bytes:
    """Random bytes of one case, twice over, so that any window of a frame's size fits."""
    block = random.Random(seed).randbytes(POOL)
    return block + block[:FRAME_MAX]


def payload(seed: int, index: int, size: int) -> bytes:
    """size bytes unique to (seed, index): a 12-byte tag, then seeded random bytes.

    The tag makes a frame delivered twice, out of order or cut short show as what it is.
    """
    tag = struct.pack(">IIi", seed & 0xFFFFFFFF, index, size)
    start = index * 7919 % POOL
    body = _pool(seed)[start:start + max(0, size - len(tag))]
    return (tag + body)[:size]


# -- datagrams ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DgramCase:
    """Datagrams sent to one DatagramPort; each message is (size, segment).

    segment 0 sends one datagram of size bytes; segment > 0 sends one UDP_SEGMENT (GSO)
    message of size bytes that the kernel cuts into datagrams of segment bytes (the last
    shorter), which the relay's UDP_GRO socket receives coalesced again.
    """

    transport: str                      # "udp4", "udp6" or "unix"
    max_frame: int
    seed: int
    messages: tuple[tuple[int, int], ...]


def datagram_sizes(size: int, segment: int) -> list[int]:
    """The datagrams one message is on the wire."""
    if segment <= 0 or segment >= size:
        return [size]
    return [segment] * (size // segment) + ([size % segment] if size % segment else [])


def dgram_wire(case: DgramCase) -> list[tuple[bytes, int]]:
    """(bytes, segment) of each message, in sending order."""
    out = []
    index = 0
    for size, segment in case.messages:
        parts = []
        for n in datagram_sizes(size, segment):
            parts.append(payload(case.seed, index, n))
            index += 1
        out.append((b"".join(parts), segment if len(parts) > 1 else 0))
    return out


def dgram_expected(case: DgramCase) -> tuple[list[bytes], int]:
    """(frames the relay must pass on in order, datagrams it must count invalid).

    Every datagram on the wire is judged alone, coalesced by GRO or not: FRAME_MIN..
    min(max_frame, DGRAM_MAX) bytes is a frame, anything else is dropped and counted.
    """
    limit = min(case.max_frame, DGRAM_MAX)
    frames, invalid, index = [], 0, 0
    for size, segment in case.messages:
        for n in datagram_sizes(size, segment):
            if FRAME_MIN <= n <= limit:
                frames.append(payload(case.seed, index, n))
            else:
                invalid += 1
            index += 1
    return frames, invalid


# -- streams -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamCase:
    """A qemu byte stream sent to one StreamPort in chunks cut at `cuts`.

    Items: ("frames", size, count) is count valid records of size bytes; ("length", n, tail)
    is a record header of length n followed by min(n, tail) payload bytes (a runt, a bad
    length or, with a short tail, a record the stream ends inside); ("junk", n) is n random
    bytes. With pump_each the relay reads after every chunk, so it sees each cut.
    """

    transport: str                      # "unix" (socketpair) or "tcp" (loopback)
    max_frame: int
    seed: int
    items: tuple[tuple, ...]
    cuts: tuple[int, ...]
    pump_each: bool


def stream_bytes(case: StreamCase) -> bytes:
    out = bytearray()
    index = 0
    for item in case.items:
        if item[0] == "frames":
            _, size, count = item
            for _ in range(count):
                out += struct.pack(">I", size) + payload(case.seed, index, size)
                index += 1
        elif item[0] == "length":
            _, n, tail = item
            out += struct.pack(">I", n) + payload(case.seed, index, min(n, tail))
            index += 1
        else:
            out += random.Random(case.seed ^ index).randbytes(item[1])
            index += 1
    return bytes(out)


def stream_chunks(case: StreamCase) -> list[bytes]:
    data = stream_bytes(case)
    points = sorted({c % (len(data) + 1) for c in case.cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)]) if b > a]


@dataclass
class StreamVerdict:
    frames: list[bytes] = field(default_factory=list)  # delivered, in order
    runts: int = 0                                      # runt records dropped and counted
    bad_length: int | None = None                       # the length that closes the port


def stream_expected(case: StreamCase) -> StreamVerdict:
    """What a StreamPort must do with the stream: parse it like a careful qemu would."""
    data = stream_bytes(case)
    verdict = StreamVerdict()
    pos = 0
    while len(data) - pos >= 4:
        (n,) = struct.unpack_from(">I", data, pos)
        if n in RUNT_LENGTHS:
            if len(data) - pos - 4 < n:
                break
            verdict.runts += 1
        elif not FRAME_MIN <= n <= case.max_frame:
            verdict.bad_length = n
            break
        elif len(data) - pos - 4 < n:
            break
        else:
            verdict.frames.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return verdict


# -- taps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VnetHeader:
    """struct virtio_net_hdr (10 bytes, host byte order as on a legacy tap)."""

    flags: int = 0
    gso_type: int = 0
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return struct.pack("=BBHHHH", self.flags, self.gso_type, self.hdr_len, self.gso_size,
                           self.csum_start, self.csum_offset)


@dataclass(frozen=True)
class TapCase:
    """Messages read by a TapPort from a socketpair, one per read(), as from a tap.

    Each message is (header, frame size): the header's 10 bytes then the frame, or, when
    header is None, frame size raw bytes (shorter than a header: a read a tap never gives).
    """

    transport: str                      # "seqpacket" or "dgram" (socketpair types)
    offload: bool
    plain_peer: bool                    # a stream port is attached besides the tap peer
    max_frame: int
    seed: int
    messages: tuple[tuple[VnetHeader | None, int], ...]


def tap_wire(case: TapCase) -> list[bytes]:
    out = []
    for index, (hdr, size) in enumerate(case.messages):
        if hdr is None:
            out.append(payload(case.seed, index, size))
        else:
            out.append(hdr.pack() + payload(case.seed, index, size))
    return out


def inet_checksum(data: bytes) -> int:
    """RFC 1071 sum of data (odd tail padded with zero), folded, not inverted."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@dataclass
class TapVerdict:
    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # (header, frame)
    invalid: int = 0
    gso_dropped: int = 0
    csum_filled: int = 0


def tap_expected(case: TapCase) -> TapVerdict:
    """What a TapPort must pass on: whole frames, and to plain peers nothing needing a header.

    With offload on and a plain peer attached, a GSO super-frame is dropped (counted) and a
    frame whose checksum is left to fill has it filled (its header then says DATA_VALID);
    a checksum position outside the frame makes the frame invalid.
    """
    verdict = TapVerdict()
    for msg in tap_wire(case):
        if not msg:
            continue  # a zero-length read: nothing to take (a tap never returns one)
        frame = bytearray(msg[VNET_HDR_LEN:])
        if len(msg) < VNET_HDR_LEN or len(frame) < FRAME_MIN:
            verdict.invalid += 1
            continue
        flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack(
            "=BBHHHH", msg[:VNET_HDR_LEN])
        if len(frame) > case.max_frame and gso_type == 0:
            verdict.invalid += 1
            continue
        if case.offload and case.plain_peer:
            if gso_type != 0:
                verdict.gso_dropped += 1
                continue
            if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                where = start + offset
                if where + 2 > len(frame):
                    verdict.invalid += 1
                    continue
                s = ~inet_checksum(bytes(frame[start:])) & 0xFFFF
                frame[where:where + 2] = struct.pack(">H", s)
                flags = VIRTIO_NET_HDR_F_DATA_VALID
                verdict.csum_filled += 1
        header = VnetHeader(flags, gso_type, hdr_len, gso_size, start, offset).pack()
        verdict.records.append((header, bytes(frame)))
    return verdict

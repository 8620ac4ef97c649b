"""Pure-Python model of qemu's stream framing: the oracle the compiled reassembler must match."""

from __future__ import annotations

import struct

FRAME_MIN = 14
FRAME_MAX = 69632


class ReferenceError(ValueError):
    pass


class ReferenceReassembler:
    """Byte-at-a-time-simple reassembly: accumulate, cut complete records, check lengths."""

    def __init__(self, max_frame: int = FRAME_MAX) -> None:
        self.max_frame = max_frame
        self.buf = bytearray()

    def feed_data(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            (length,) = struct.unpack_from(">I", self.buf)
            if not FRAME_MIN <= length <= self.max_frame:
                raise ReferenceError(f"bad frame length {length}")
            if len(self.buf) < 4 + length:
                break
            frames.append(bytes(self.buf[4:4 + length]))
            del self.buf[:4 + length]
        return frames


def frame_stream(frames: list[bytes]) -> bytes:
    """frames in qemu's stream framing."""
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)

"""Pure-Python model of qemu's stream framing: the oracle the compiled reassembler must match."""

from __future__ import annotations

import struct

FRAME_MIN = 14
FRAME_MAX = 69632


class ReferenceError(ValueError):
    pass


class ReferenceReassembler:
    """Byte-at-a-time-simple reassembly: accumulate, cut complete records, check lengths.

    A length above max_frame is an error (the stream cannot be trusted past it); a runt
    (length below FRAME_MIN) is skipped once complete and counted in `runts`.
    """

    def __init__(self, max_frame: int = FRAME_MAX) -> None:
        self.max_frame = max_frame
        self.buf = bytearray()
        self.runts = 0

    def feed_data(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            (length,) = struct.unpack_from(">I", self.buf)
            if length > self.max_frame:
                raise ReferenceError(f"bad frame length {length}")
            if len(self.buf) < 4 + length:
                break
            if length < FRAME_MIN:
                self.runts += 1
            else:
                frames.append(bytes(self.buf[4:4 + length]))
            del self.buf[:4 + length]
        return frames


def frame_stream(frames: list[bytes]) -> bytes:
    """frames in qemu's stream framing."""
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)

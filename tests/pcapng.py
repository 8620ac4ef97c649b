"""A small pcapng reader of the tests' own, written from the format's text: capture's oracle."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SHB, IDB, EPB = 0x0A0D0D0A, 1, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
INBOUND, OUTBOUND = 1, 2  # epb_flags direction (low two bits)


@dataclass
class Interface:
    linktype: int
    snaplen: int
    name: str | None = None
    description: str | None = None
    tsresol: int | None = None


@dataclass
class Packet:
    section: int        # index of the section it is in
    interface: int      # its interface id (per section)
    name: str | None    # that interface's if_name
    timestamp: int      # in units of the interface's resolution
    data: bytes         # the captured bytes
    length: int         # the frame's original length
    flags: int | None   # epb_flags, if present

    @property
    def direction(self) -> int | None:
        return None if self.flags is None else self.flags & 3


@dataclass
class Capture:
    sections: list[list[Interface]] = field(default_factory=list)
    packets: list[Packet] = field(default_factory=list)
    tail: int = 0       # bytes after the last whole block (a stream cut off mid-block)


def _options(data: bytes, order: str) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from(order + "HH", data, pos)
        pos += 4
        if code == 0:
            break
        assert pos + length <= len(data), "option runs past its block"
        out.append((code, data[pos:pos + length]))
        pos += length + (-length % 4)
    return out


def parse(data: bytes, *, allow_tail: bool = False) -> Capture:
    """Every section, interface and packet of data; AssertionError if it is not valid pcapng
    (a stream cut mid-block is accepted with allow_tail, and its length is in `tail`)."""
    out = Capture()
    pos = 0
    order = "<"
    while pos < len(data):
        if len(data) - pos < 12:
            assert allow_tail, f"{len(data) - pos} stray bytes at {pos}"
            out.tail = len(data) - pos
            break
        kind = struct.unpack_from("<I", data, pos)[0]
        if kind == SHB:
            magic_le = struct.unpack_from("<I", data, pos + 8)[0]
            order = "<" if magic_le == BYTE_ORDER_MAGIC else ">"
            assert struct.unpack_from(order + "I", data, pos + 8)[0] == BYTE_ORDER_MAGIC
        else:
            assert out.sections, f"block type {kind:#x} at {pos} before any section header"
            kind = struct.unpack_from(order + "I", data, pos)[0]
        length = struct.unpack_from(order + "I", data, pos + 4)[0]
        assert length >= 12 and length % 4 == 0, f"bad block length {length} at {pos}"
        if pos + length > len(data):
            assert allow_tail, f"block at {pos} runs past the end"
            out.tail = len(data) - pos
            break
        trailer = struct.unpack_from(order + "I", data, pos + length - 4)[0]
        assert trailer == length, f"block at {pos}: trailing length {trailer} != {length}"
        body = data[pos + 8:pos + length - 4]
        if kind == SHB:
            major, minor = struct.unpack_from(order + "HH", body, 4)
            assert (major, minor) == (1, 0), f"pcapng version {major}.{minor}"
            out.sections.append([])
        elif kind == IDB:
            linktype, _, snaplen = struct.unpack_from(order + "HHI", body, 0)
            interface = Interface(linktype, snaplen)
            for code, value in _options(body[8:], order):
                if code == 2:
                    interface.name = value.decode()
                elif code == 3:
                    interface.description = value.decode()
                elif code == 9:
                    interface.tsresol = value[0]
            out.sections[-1].append(interface)
        elif kind == EPB:
            ifid, high, low, caplen, length_orig = struct.unpack_from(order + "IIIII", body, 0)
            interfaces = out.sections[-1]
            assert ifid < len(interfaces), f"packet at {pos} names interface {ifid} of " \
                                           f"{len(interfaces)}"
            assert caplen <= length_orig
            padded = caplen + (-caplen % 4)
            flags = None
            for code, value in _options(body[20 + padded:], order):
                if code == 2:
                    flags = struct.unpack(order + "I", value)[0]
            out.packets.append(Packet(len(out.sections) - 1, ifid, interfaces[ifid].name,
                                      (high << 32) | low, body[20:20 + caplen], length_orig,
                                      flags))
        pos += length
    return out


def read(path: str, **kwargs: bool) -> Capture:
    with open(path, "rb") as f:
        return parse(f.read(), **kwargs)

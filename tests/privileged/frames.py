"""Raw test frames for the VXLAN tests: send tagged Ethernet frames and count them on arrival.

Run inside a namespace (`ip netns exec NS python frames.py ...`):

    frames.py sniff IFACE SECONDS      print "ready", then one JSON object {tag: count}
    frames.py send IFACE TAG...        one broadcast frame per TAG out of IFACE
    frames.py vxlan SRC DST PORT FLAGS VNI TAG
                                       one VXLAN datagram (8-byte header, FLAGS and VNI as
                                       given) from SRC to DST:PORT, carrying a tagged frame

Every tagged frame is a broadcast with the local experimental ethertype 0x88b5, so that
nothing else on the segment (ARP, IPv6 neighbour discovery) is ever counted. Frames this
host sends itself (PACKET_OUTGOING) are not counted by `sniff`.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

ETHERTYPE = 0x88B5
PACKET_OUTGOING = 4
SOURCE = bytes.fromhex("020000000001")   # for frames built here, not sent by a host's NIC


def frame(tag: str, source: bytes = SOURCE) -> bytes:
    """A broadcast frame of ethertype 0x88b5 whose payload is `tag` (padded to 64 bytes)."""
    body = tag.encode().ljust(50, b"\0")
    return b"\xff" * 6 + source + struct.pack("!H", ETHERTYPE) + body


def tag_of(data: bytes) -> str:
    """The tag carried by a frame made by frame()."""
    return data[14:].rstrip(b"\0").decode(errors="replace")


def sniff(iface: str, seconds: float) -> dict[str, int]:
    """Count tagged frames arriving at iface for `seconds`; prints "ready" once bound."""
    counts: dict[str, int] = {}
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE)) as s:
        s.bind((iface, ETHERTYPE))
        print("ready", flush=True)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                continue
            data, addr = s.recvfrom(65536)
            if addr[2] == PACKET_OUTGOING:
                continue
            tag = tag_of(data)
            counts[tag] = counts.get(tag, 0) + 1
    return counts


def send(iface: str, tags: list[str]) -> None:
    """One tagged broadcast per tag out of iface, from iface's own MAC."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        mac = s.getsockname()[4]
        for tag in tags:
            s.send(frame(tag, mac))


def send_vxlan(src: str, dst: str, port: int, flags: int, vni: int, tag: str) -> None:
    """One datagram: flags byte, 3 reserved bytes (0xff if flags has reserved bits set, to
    show they are ignored), the 24-bit VNI, a reserved byte (likewise), then the tagged frame."""
    noisy = bool(flags & ~0x08)
    reserved = b"\xff\xff\xff" if noisy else b"\0\0\0"
    header = bytes([flags]) + reserved + struct.pack("!I", vni << 8 | (0xFF if noisy else 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.sendto(header + frame(tag), (dst, port))


def main(argv: list[str]) -> int:
    if argv[0] == "sniff":
        print(json.dumps(sniff(argv[1], float(argv[2]))), flush=True)
    elif argv[0] == "send":
        send(argv[1], argv[2:])
    elif argv[0] == "vxlan":
        send_vxlan(argv[1], argv[2], int(argv[3]), int(argv[4], 0), int(argv[5]), argv[6])
    else:
        print(f"frames.py: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""VXLAN receive under a random mix (single and coalesced datagrams, bad VNIs, strangers, every size): exactly the valid frames, in order."""

from __future__ import annotations

import random
import socket
import struct

import pytest
from peers import track
from vxlan_peers import FakeVtep, HubRig, udp_socket, vxlan_header

from fastrelay._core import StreamPort

UDP_SEGMENT = 103  # linux/udp.h
VNI = 42


class Mix:
    """Datagrams from three VTEPs and one stranger; remembers which frames must arrive."""

    def __init__(self, rig: HubRig, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.vteps = [FakeVtep(f"127.0.0.{k}", vni=VNI) for k in (2, 3, 4)]
        self.port = rig.vxlan(self.vteps, vni=VNI)
        self.stranger = udp_socket("127.0.0.9")
        self.seq = 0
        self.expected: list[bytes] = []

    def frame(self, vtep: int, size: int) -> bytes:
        """A broadcast from the VTEP's host, numbered, cut to size (may be too short)."""
        self.seq += 1
        head = b"\xff" * 6 + bytes([2, 0, 0, 0, 0, vtep]) + self.seq.to_bytes(4, "big")
        return (head + self.rnd.randbytes(max(0, size - len(head))))[:size]

    def datagram(self, size: int, valid: list[bytes]) -> bytes:
        """One VXLAN datagram carrying a frame of size bytes; valid gets the frame if the
        relay must pass it on (our VNI, 14 bytes or more)."""
        vni = VNI if self.rnd.random() < 0.9 else VNI + 1
        f = self.frame(self.vtep, size)
        if vni == VNI and size >= 14:
            valid.append(f)
        return vxlan_header(vni) + f

    def send_one(self) -> None:
        self.vtep = self.rnd.randrange(3)
        valid: list[bytes] = []
        sock = self.stranger if self.rnd.random() < 0.05 else self.vteps[self.vtep].sock
        if self.rnd.random() < 0.4:
            # A GSO run: the relay's UDP_GRO hands it over coalesced, last segment short.
            seg = self.rnd.choice([9, 21, 22, 23, 64, 508, 1008, 1408])
            count = self.rnd.randrange(2, 100 if seg < 600 else 40)
            sizes = [seg - 8] * (count - 1) + [self.rnd.randrange(1, seg - 7)]
            data = b"".join(self.datagram(size, valid) for size in sizes)
            sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, seg)
            sock.sendto(data, self.vteps[0].to)
            sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 0)
        else:
            size = self.rnd.choice([0, 5, 8, 13, 14, 15, 60, 1500, self.rnd.randrange(9000)])
            sock.sendto(self.datagram(size, valid) if size else vxlan_header(VNI)[:5],
                        self.vteps[0].to)
        if sock is not self.stranger:
            self.expected += valid


@pytest.mark.parametrize("seed", [1, 2])
def test_exactly_the_valid_frames_arrive_in_order(seed: int) -> None:
    rig = HubRig()
    try:
        mix = Mix(rig, seed)
        ours, theirs = (track(s) for s in socket.socketpair())
        ours.setblocking(False)
        theirs.setblocking(False)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rig.hub.add(StreamPort(ours.detach(), "stream"))
        data = bytearray()

        def drain() -> None:
            try:
                while True:
                    data.extend(theirs.recv(1 << 20))
            except BlockingIOError:
                pass

        for i in range(1500):
            mix.send_one()
            if i % 20 == 19:
                rig.pump(timeout=0.001)
                drain()
        rig.pump(lambda: (drain(), len(data) >= 4 * len(mix.expected)
                          + sum(map(len, mix.expected)))[1], timeout=10)
        got = []
        while data:
            n = struct.unpack(">I", data[:4])[0]
            got.append(bytes(data[4:4 + n]))
            del data[:4 + n]
        assert got == mix.expected
        stats = mix.port.stats()
        assert stats["drop_vni"] > 0 and stats["drop_foreign"] > 0 and stats["gro_messages"] > 0
        assert stats["drop_bounds"] == 0 and stats["rx_frames"] == len(mix.expected)
    finally:
        rig.close()

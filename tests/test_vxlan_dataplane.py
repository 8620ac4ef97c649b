"""VxlanPort on real sockets: the wire format, what is dropped and counted, replication, DF."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import pytest
from vxlan_peers import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IPV6_MTU,
    IPV6_MTU_DISCOVER,
    IPV6_PMTUDISC_DO,
    FakeVtep,
    HubRig,
    udp_socket,
    vxlan_header,
)

BCAST = b"\xff" * 6
A, B, C = (bytes.fromhex(f"02000000000{c}") for c in "abc")


def frame(dst: bytes, src: bytes, seq: int = 0, size: int = 60) -> bytes:
    """A frame dst <- src numbered seq, its tail the same bytes for the same arguments."""
    head = dst + src + b"\x88\xb5" + seq.to_bytes(8, "big")
    return (head + random.Random(seq * 65536 + size).randbytes(max(0, size - 22)))[:size]


@pytest.fixture
def rig() -> Iterator[HubRig]:
    hub = HubRig()
    yield hub
    hub.close()


class Guest:
    """A guest behind an ordinary UDP port of the rig."""

    def __init__(self, rig: HubRig, trunk: bool = False) -> None:
        self.sock = udp_socket("127.0.0.1")
        self.port, self.to = rig.udp(self.sock, trunk=trunk)
        self.rig = rig

    def send(self, frames: list[bytes]) -> None:
        for f in frames:
            self.sock.sendto(f, self.to)

    def recv(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        self.rig.pump(lambda: self._take(out, n), timeout=5)
        return out

    def _take(self, out: list[bytes], n: int) -> bool:
        self.sock.setblocking(False)
        try:
            while len(out) < n:
                out.append(self.sock.recv(1 << 17))
        except BlockingIOError:
            pass
        return len(out) >= n

    def silent(self) -> bool:
        self.rig.pump(timeout=0.2)
        return not self._take([], 1)


def test_frames_cross_byte_exact_with_exactly_the_rfc_header(rig: HubRig) -> None:
    vtep = FakeVtep(vni=0xABCDEF)
    port = rig.vxlan([vtep], vni=0xABCDEF)
    guest = Guest(rig)
    frames = [frame(BCAST, A, i, size) for i, size in enumerate((14, 60, 1500, 9000))]
    vtep.send(frames)
    assert guest.recv(len(frames)) == frames
    back = [frame(A, B, i, size) for i, size in enumerate((60, 1500, 9000))]
    guest.send(back)
    rig.pump(lambda: port.tx_frames == len(back))
    datagrams = vtep.recv_raw(len(back))
    # flags 0x08, 3 zero bytes, the VNI, one zero byte; then the frame untouched.
    assert [d[:8] for d in datagrams] == [b"\x08\x00\x00\x00\xab\xcd\xef\x00"] * len(back)
    assert [d[8:] for d in datagrams] == back
    stats = port.stats()
    assert stats["rx_frames"] == len(frames) and stats["tx_frames"] == len(back)
    assert stats["rx_bytes"] == sum(map(len, frames))  # inner frames, headers not counted
    assert stats["replicated"] == 0 and stats["vni"] == 0xABCDEF and stats["peers"] == 1


def test_bad_packets_are_dropped_and_counted_and_the_port_goes_on(rig: HubRig) -> None:
    vtep = FakeVtep("127.0.0.2")
    port = rig.vxlan([vtep])
    guest = Guest(rig)
    good = frame(BCAST, A, 1)
    vtep.send_raw(vxlan_header(43) + good)                 # another VNI
    vtep.send_raw(vxlan_header(42, flags=0) + good)        # I flag clear
    vtep.send_raw(vxlan_header(42, flags=0xF7) + good)     # every flag but I
    vtep.send_raw(vxlan_header(42) + good[:13])            # inner frame shorter than 14
    vtep.send_raw(vxlan_header(42)[:7])                    # not even a header
    stranger = udp_socket("127.0.0.9")                     # not a remote endpoint
    vtep.send_raw(vxlan_header(42) + good, sock=stranger)
    # Reserved bits set are ignored on receipt (RFC 7348 section 5).
    odd = frame(BCAST, A, 2)
    vtep.send_raw(vxlan_header(42, flags=0xFF, reserved=b"\xff\xff\xff", last=0xFF) + odd)
    vtep.send([frame(BCAST, A, 3)])
    assert guest.recv(2) == [odd, frame(BCAST, A, 3)]
    assert guest.silent()
    stats = port.stats()
    assert stats["drop_vni"] == 3 and stats["drop_foreign"] == 1
    # drop_invalid holds them all: VNI (3), foreign (1), too short (2).
    assert stats["drop_invalid"] == 6
    assert stats["rx_frames"] == 2 and stats["drop_bounds"] == 0
    assert not port.closed


def test_broadcast_is_replicated_once_to_each_vtep_unicast_follows_the_mac(rig: HubRig) -> None:
    v1, v2 = FakeVtep("127.0.0.2"), FakeVtep("127.0.0.3")
    port = rig.vxlan([v1, v2])
    guest = Guest(rig)
    hello = frame(BCAST, C, 0)
    guest.send([hello])
    assert v1.recv(1) == [hello] and v2.recv(1) == [hello]
    rig.pump(timeout=0.1)
    assert v1.pending() == [] and v2.pending() == []  # once each
    assert port.stats()["replicated"] == 1
    v1.send([frame(BCAST, A, 1)])                  # A is behind VTEP 1
    assert guest.recv(1) == [frame(BCAST, A, 1)]
    to_a = [frame(A, C, i) for i in range(5)]
    guest.send(to_a)
    assert v1.recv(5) == to_a
    rig.pump(timeout=0.2)
    assert v2.pending() == [] and v1.pending() == []
    v2.send([frame(C, A, 2)])                      # A moved behind VTEP 2
    assert guest.recv(1) == [frame(C, A, 2)]
    guest.send(to_a)
    assert v2.recv(5) == to_a
    rig.pump(timeout=0.2)
    assert v1.pending() == [] and v2.pending() == []
    assert rig.switch.stats()["moves"] == 0  # a move between remotes, not between ports
    assert port.stats()["replicated"] == 1   # unicast is never replicated


def test_the_kernel_source_port_varies_the_address_names_the_vtep(rig: HubRig) -> None:
    """Linux sends VXLAN from a source port hashed per flow: a datagram from a VTEP's
    address but another port is that VTEP's, and replies go to its configured port."""
    v1, v2 = FakeVtep("127.0.0.2"), FakeVtep("127.0.0.3")
    rig.vxlan([v1, v2])
    guest = Guest(rig)
    other_port = udp_socket("127.0.0.3")
    v2.send_raw(vxlan_header(42) + frame(BCAST, A, 1), sock=other_port)
    assert guest.recv(1) == [frame(BCAST, A, 1)]
    guest.send([frame(A, C, 2)])
    assert v2.recv(1) == [frame(A, C, 2)]
    rig.pump(timeout=0.2)
    assert v1.pending() == []
    other_port.setblocking(False)
    with pytest.raises(BlockingIOError):
        other_port.recv(100)


@pytest.mark.parametrize("forwarding", [True, False], ids=["switch", "hub"])
def test_nothing_from_vxlan_goes_back_to_vxlan_or_to_a_trunk(forwarding: bool) -> None:
    rig = HubRig(forwarding)
    try:
        v1, v2, v3 = FakeVtep("127.0.0.2"), FakeVtep("127.0.0.3"), FakeVtep("127.0.0.4", vni=7)
        port = rig.vxlan([v1, v2])
        other = rig.vxlan([v3], vni=7)       # a second overlay (another VNI)
        guest, trunk = Guest(rig), Guest(rig, trunk=True)
        v1.send([frame(BCAST, A, 1)])
        assert guest.recv(1) == [frame(BCAST, A, 1)]
        assert trunk.silent()
        assert v1.pending() == v2.pending() == v3.pending() == []
        # A guest's broadcast reaches every VTEP of both overlays and the trunk, once each.
        guest.send([frame(BCAST, C, 2)])
        assert v1.recv(1) == v2.recv(1) == v3.recv(1) == trunk.recv(1) == [frame(BCAST, C, 2)]
        # From the trunk: to the guest only (split horizon, as between trunks).
        trunk.send([frame(BCAST, B, 3)])
        assert guest.recv(1) == [frame(BCAST, B, 3)]
        rig.pump(timeout=0.2)
        assert v1.pending() == v2.pending() == v3.pending() == []
        assert port.trunk and other.trunk and port.overlay
    finally:
        rig.close()


def test_a_gso_burst_reaches_each_vtep_in_order_with_its_headers(rig: HubRig) -> None:
    v1, v2 = FakeVtep("127.0.0.2"), FakeVtep("127.0.0.3")
    port = rig.vxlan([v1, v2])
    guest = Guest(rig)
    burst = [frame(BCAST, C, i, 1400) for i in range(64)] + [frame(BCAST, C, 99, 700)]
    guest.send(burst)
    assert v1.recv(len(burst)) == burst and v2.recv(len(burst)) == burst
    stats = port.stats()
    assert stats["replicated"] == len(burst) and stats["tx_frames"] == 2 * len(burst)
    assert port.gso and stats["gso_messages"] >= 2  # segments of header + frame


def test_a_coalesced_run_is_split_and_each_datagram_checked(rig: HubRig) -> None:
    """A GSO sender's run arrives as one buffer (UDP_GRO): every datagram in it starts with
    its own header, which is checked on its own."""
    vtep = FakeVtep("127.0.0.2")
    port = rig.vxlan([vtep])
    guest = Guest(rig)
    assert port.gro
    frames = [frame(BCAST, A, i, 1000) for i in range(8)]
    run = b"".join(vxlan_header(43 if i == 3 else 42) + f for i, f in enumerate(frames))
    vtep.sock.setsockopt(socket.IPPROTO_UDP, 103, 8 + 1000)  # UDP_SEGMENT
    vtep.send_raw(run)
    expected = frames[:3] + frames[4:]
    assert guest.recv(len(expected)) == expected
    assert port.stats()["drop_vni"] == 1 and port.stats()["gro_messages"] >= 1


def test_ipv4_socket_never_fragments(rig: HubRig) -> None:
    port = rig.vxlan([FakeVtep("127.0.0.2")])
    with socket.socket(fileno=os.dup(port.fd)) as sock:
        assert sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == IP_PMTUDISC_DO


def test_ipv6_frame_over_the_path_mtu_is_dropped_and_counted_not_fragmented(
        rig: HubRig) -> None:
    """A path MTU of 1280 (the socket's IPV6_MTU, so no root is needed): the inner frame
    may be 1280 - 70 + 14 = 1224 bytes, one more is refused by the kernel, alone or in a
    GSO run, and counted; nothing reaches the VTEP in pieces."""
    vtep = FakeVtep("::1")
    port = rig.vxlan([vtep], host="::1",
                     setup=lambda s: s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU, 1280))
    with socket.socket(fileno=os.dup(port.fd)) as sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG) == 1
        assert sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER) == IPV6_PMTUDISC_DO
    guest = Guest(rig)
    fits, too_big = frame(BCAST, C, 1, 1224), frame(BCAST, C, 2, 1225)
    guest.send([too_big, fits])
    assert vtep.recv(1) == [fits]
    guest.send([frame(BCAST, C, i, 1300) for i in range(10)] + [fits])
    assert vtep.recv(1) == [fits]
    rig.pump(timeout=0.2)
    assert vtep.pending() == []
    stats = port.stats()
    assert stats["drop_mtu"] == 11 and stats["drop_send"] == 11 and stats["tx_frames"] == 2
    assert not port.closed

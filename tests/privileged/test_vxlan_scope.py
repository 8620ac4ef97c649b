"""A VXLAN port names a link-local remote endpoint by its address and its link: the same
address on another link is a stranger, whose datagrams are dropped and counted."""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import time
from collections.abc import Callable

import pytest
from pyroute2 import netns

from fastrelay._core import DatagramPort, Hub, Switch, VxlanPort
from privileged.netns import Lab

pytestmark = pytest.mark.privileged

VNI = 7
RELAY, VTEP = "fe80::1", "fe80::2"
PEER_MAC, STRANGER_MAC, GUEST_MAC = (bytes.fromhex(f"0200000000{c}") for c in ("01", "02", "03"))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def ifindex(ns: str, name: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "dev", name],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split(":", 1)[0])


def udp6_in(ns: str, host: str, scope: int, port: int) -> socket.socket:
    """An IPv6 UDP socket made in namespace ns, bound to host on link scope (0: any)."""
    netns.pushns(ns)
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    finally:
        netns.popns()
    s.bind((host, port, 0, scope))
    return s


def vxlan(frame: bytes) -> bytes:
    return bytes([8, 0, 0, 0]) + struct.pack(">I", VNI << 8) + frame


def pump(hub: Hub, until: Callable[[], bool], seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        select.select([hub.fileno()], [], [], 0.01)
        hub.poll()
        if until():
            return True
    return False


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    got = []
    try:
        while True:
            got.append(sock.recv(70000))
    except BlockingIOError:
        return got


def test_a_link_local_endpoint_is_matched_on_its_link_too(lab: Lab) -> None:
    # Two links between the relay's namespace and the VTEPs', the same addresses on both:
    # fe80::1 on the relay's side, fe80::2 on the other. The endpoint is fe80::2 on link 1.
    relay_ns, vtep_ns = lab.namespace("a"), lab.namespace("b")
    for k in (1, 2):
        ip("-n", relay_ns, "link", "add", f"va{k}", "type", "veth", "peer", "name", f"vb{k}",
           "netns", vtep_ns)
        for ns, dev, addr in ((relay_ns, f"va{k}", RELAY), (vtep_ns, f"vb{k}", VTEP)):
            ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
    link1 = ifindex(relay_ns, "va1")
    assert link1 != ifindex(relay_ns, "va2")
    peer = udp6_in(vtep_ns, VTEP, ifindex(vtep_ns, "vb1"), 4789)
    stranger = udp6_in(vtep_ns, VTEP, ifindex(vtep_ns, "vb2"), 4789)
    vx_sock = udp6_in(relay_ns, "::", 0, 4789)
    guest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    guest.bind(("127.0.0.1", 0))
    port_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port_sock.bind(("127.0.0.1", 0))
    hub = Hub(switch=Switch(forwarding=True))
    try:
        vx_sock.setblocking(False)
        port_sock.setblocking(False)
        to_guest = port_sock.getsockname()
        vx = VxlanPort(vx_sock.detach(), "vx", family=socket.AF_INET6,
                       peers=[(VTEP, 4789, 0, link1)], vni=VNI)
        hub.add(vx)
        hub.add(DatagramPort(port_sock.detach(), "guest", peer=guest.getsockname()))

        # Both send from fe80::2 port 4789; only the one on link 1 is the endpoint. The
        # stranger's frame would go out first, were it taken.
        stranger.sendto(vxlan(b"\xff" * 6 + STRANGER_MAC + b"\x88\xb5" + b"S" * 50),
                        (RELAY, 4789, 0, ifindex(vtep_ns, "vb2")))
        assert pump(hub, lambda: vx.stats()["drop_foreign"] == 1), vx.stats()
        peer.sendto(vxlan(b"\xff" * 6 + PEER_MAC + b"\x88\xb5" + b"P" * 50),
                    (RELAY, 4789, 0, ifindex(vtep_ns, "vb1")))
        assert pump(hub, lambda: readable(guest))
        got = guest.recv(2048)
        assert got[6:12] == PEER_MAC and got.endswith(b"P" * 50)
        assert vx.stats()["drop_foreign"] == 1 and vx.stats()["drop_invalid"] == 1
        assert not drain(guest)

        # The answer goes to the endpoint, on its link; the stranger gets nothing.
        guest.sendto(PEER_MAC + GUEST_MAC + b"\x88\xb5" + b"G" * 50, to_guest)
        assert pump(hub, lambda: readable(peer))
        assert peer.recv(2048) == vxlan(PEER_MAC + GUEST_MAC + b"\x88\xb5" + b"G" * 50)
        pump(hub, lambda: False, 0.2)
        assert not drain(stranger)
    finally:
        hub.close()
        for s in (peer, stranger, guest):
            s.close()

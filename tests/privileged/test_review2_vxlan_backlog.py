"""A VXLAN port whose socket fills (EAGAIN) queues frames with their remote endpoint: each VTEP gets exactly its frames, in order."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from pyroute2 import netns

from fastrelay._core import DatagramPort, Hub, Switch, VxlanPort
from privileged.netns import socket_in as netns_socket

pytestmark = pytest.mark.privileged

VNI = 5
RELAY, VTEP1, VTEP2 = "10.9.0.1", "10.9.0.3", "10.9.0.4"
X, Y, C = (bytes.fromhex(f"0200000000{c}") for c in ("aa", "bb", "cc"))


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    """The relay's namespace and the VTEPs', joined by a veth whose relay side is a slow
    queue (tbf, 40 Mbit/s, 10 MB): a 64 KiB socket buffer fills long before it drops."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    names = (f"r2a{os.getpid()}", f"r2b{os.getpid()}")
    made = []
    try:
        for name in names:
            netns.create(name)
            made.append(name)
        a, b = names
        for cmd in ([f"-n {a} link add va type veth peer name vb netns {b}"],
                    [f"-n {a} addr add {RELAY}/24 dev va", f"-n {a} link set va up",
                     f"-n {a} link set lo up", f"-n {b} addr add {VTEP1}/24 dev vb",
                     f"-n {b} addr add {VTEP2}/24 dev vb", f"-n {b} link set vb up"]):
            for c in cmd:
                subprocess.run(["ip", *c.split()], check=True)
        subprocess.run(["tc", "-n", a, "qdisc", "add", "dev", "va", "root", "tbf", "rate",
                        "40mbit", "burst", "16k", "limit", "10mb"], check=True)
        yield a, b
    finally:
        for name in made:
            netns.remove(name)


def socket_in(ns: str, host: str, port: int, buffer: int) -> socket.socket:
    """A UDP socket bound in namespace ns (sockets stay in the namespace they were made in)."""
    s = netns_socket(ns)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    s.bind((host, port))
    return s


def test_queued_frames_keep_their_vtep(two_namespaces: tuple[str, str]) -> None:
    relay_ns, vtep_ns = two_namespaces
    vteps = [socket_in(vtep_ns, host, 4789, 8 << 20) for host in (VTEP1, VTEP2)]
    vx_sock = socket_in(relay_ns, RELAY, 4789, 65536)
    guest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    guest.bind(("127.0.0.1", 0))
    port_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port_sock.bind(("127.0.0.1", 0))
    # The guest port pauses while the VXLAN port is congested: its socket holds the rest.
    port_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    hub = Hub(switch=Switch(forwarding=True))
    try:
        for s in (vx_sock, port_sock):
            s.setblocking(False)
        vx = VxlanPort(vx_sock.detach(), "vx", family=socket.AF_INET,
                       peers=[(VTEP1, 4789), (VTEP2, 4789)], vni=VNI, queue_bytes=8 << 20)
        hub.add(vx)
        to_guest = port_sock.getsockname()
        from_guest = DatagramPort(port_sock.detach(), "guest", peer=guest.getsockname())
        hub.add(from_guest)

        def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                select.select([hub.fileno()], [], [], 0.01)
                hub.poll()

        # X is behind VTEP 1, Y behind VTEP 2.
        header = bytes([8, 0, 0, 0]) + struct.pack(">I", VNI << 8)
        for sock, mac in zip(vteps, (X, Y)):
            sock.sendto(header + b"\xff" * 6 + mac + b"\x08\x00" + bytes(50), (RELAY, 4789))
        pump(0.3)
        # To X, to Y, to everyone, over and over: faster than the queue drains.
        expected: list[list[int]] = [[], []]
        most_queued = 0
        for i in range(3000):
            kind = i % 3
            guest.sendto((X, Y, b"\xff" * 6)[kind] + C + b"\x88\xb5" + i.to_bytes(4, "big")
                         + bytes(1000), to_guest)
            for k in (0, 1):
                if kind in (k, 2):
                    expected[k].append(i)
            if i % 50 == 0:
                hub.poll()
                most_queued = max(most_queued, vx.queued_frames)
        pump(3.0)
        assert most_queued > 0, "the socket never filled: the backlog was not exercised"
        assert from_guest.stats()["rx_frames"] == 3000
        for k, sock in enumerate(vteps):
            sock.setblocking(False)
            got = []
            try:
                while True:
                    got.append(int.from_bytes(sock.recv(70000)[8 + 14:8 + 18], "big"))
            except BlockingIOError:
                pass
            assert got == expected[k], f"VTEP {k + 1}"
        stats = vx.stats()
        assert stats["replicated"] == 1000 and stats["drop_queue"] == 0
    finally:
        hub.close()
        for s in (*vteps, guest):
            s.close()

"""VXLAN test peers: a fake remote tunnel endpoint on a raw UDP socket, and a hub driven in-thread."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Sequence

from peers import track

from fastrelay._core import DatagramPort, Hub, Port, Switch, VxlanPort

# RFC 7348 section 5: flags (I = 0x08), 3 reserved bytes, 24-bit VNI, 1 reserved byte.
VXLAN_I_FLAG = 0x08
# Socket options the socket module does not name (linux/in.h, linux/in6.h).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IPV6_MTU_DISCOVER = 23
IPV6_MTU = 24
IPV6_PMTUDISC_DO = 2


def vxlan_header(vni: int, flags: int = VXLAN_I_FLAG, reserved: bytes = b"\0\0\0",
                 last: int = 0) -> bytes:
    """An 8-byte VXLAN header; every field may be set wrong on purpose."""
    return bytes([flags]) + reserved + struct.pack(">I", (vni << 8) | last)


def udp_socket(host: str, port: int = 0) -> socket.socket:
    """A bound UDP socket with 4 MiB buffers (bursts must not overflow a test peer)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = track(socket.socket(family, socket.SOCK_DGRAM))
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    sock.bind((host, port))
    return sock


class FakeVtep:
    """A remote VXLAN tunnel endpoint: sends and receives raw VXLAN datagrams."""

    def __init__(self, host: str = "127.0.0.1", vni: int = 42) -> None:
        self.sock = udp_socket(host)
        self.address = self.sock.getsockname()
        self.vni = vni
        self.to: tuple[str, int] | None = None  # the relay's VXLAN port
        # Called while waiting: a hub driven by the test thread runs meanwhile (HubRig).
        self.idle: Callable[[], None] = lambda: time.sleep(0.01)

    def send(self, frames: Sequence[bytes], vni: int | None = None) -> None:
        header = vxlan_header(self.vni if vni is None else vni)
        for frame in frames:
            self.send_raw(header + frame)

    def send_raw(self, datagram: bytes, sock: socket.socket | None = None) -> None:
        assert self.to is not None
        (sock or self.sock).sendto(datagram, self.to)

    def recv_raw(self, n: int, timeout: float = 5.0) -> list[bytes]:
        """n datagrams as received (headers included)."""
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            out += self.pending()
            if len(out) >= n:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(out)} of {n} VXLAN datagrams in {timeout}s")
            self.idle()

    def recv(self, n: int, timeout: float = 5.0) -> list[bytes]:
        """n inner frames, each checked to come with exactly our header."""
        out = []
        for datagram in self.recv_raw(n, timeout):
            assert datagram[:8] == vxlan_header(self.vni), datagram[:8].hex()
            out.append(datagram[8:])
        return out

    def pending(self) -> list[bytes]:
        """Every datagram waiting now (none: an empty list)."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(1 << 17))
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


class HubRig:
    """A Hub (and its Switch) driven from the test thread: ports built on real sockets."""

    def __init__(self, forwarding: bool = True) -> None:
        self.switch = Switch(forwarding=forwarding)
        self.hub = Hub(switch=self.switch)

    def vxlan(self, vteps: Sequence[FakeVtep], vni: int = 42, host: str = "127.0.0.1",
              setup: Callable[[socket.socket], None] | None = None) -> VxlanPort:
        """A VXLAN port bound on host, with vteps as its remote endpoints, attached."""
        sock = udp_socket(host)
        if setup is not None:
            setup(sock)
        where = sock.getsockname()
        family = sock.family
        sock.setblocking(False)
        port = VxlanPort(sock.detach(), f"vxlan {vni}", family=family,
                         peers=[v.address for v in vteps], vni=vni)
        for v in vteps:
            v.to = where
            v.idle = lambda: self.pump(timeout=0.01)
        self.hub.add(port)
        return port

    def udp(self, guest: socket.socket, trunk: bool = False) -> tuple[DatagramPort, tuple]:
        """A plain UDP port sending to guest, attached; (port, its address for the guest)."""
        sock = udp_socket("127.0.0.1")
        where = sock.getsockname()
        sock.setblocking(False)
        port = DatagramPort(sock.detach(), "udp", peer=guest.getsockname())
        self.hub.add(port, trunk=trunk)
        return port, where

    def pump(self, until: Callable[[], bool] | None = None, timeout: float = 0.3) -> None:
        """Poll the hub for timeout seconds, or until until() holds (AssertionError if it
        never does)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                if until is not None:
                    raise AssertionError("the hub never got there")
                return
            select.select([self.hub.fileno()], [], [], min(left, 0.02))
            self.hub.poll()

    def close(self) -> None:
        self.hub.close()

    @staticmethod
    def rx(port: Port) -> int:
        return int(port.rx_frames)

"""A link-local peer is its address and its link: VXLAN endpoints, TCP (plain and TLS) and UDP
targets written [fe80::2%eth0] reach that link only, and the same address on another link is
another host (a stranger to a VXLAN port, whose datagrams are dropped and counted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable

import pytest
import uvloop
from peers import free_port
from pyroute2 import netns
from tlscerts import LocalCA

from fastrelay._core import DatagramPort, Hub, Switch, VxlanPort
from fastrelay.relay import Relay, RelayOptions
from fastrelay.targets import parse_target
from privileged.netns import Lab, socket_in

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
    s = socket_in(ns, socket.AF_INET6)
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


def two_links(lab: Lab) -> tuple[str, str]:
    """The relay's namespace and the VTEPs', joined by two veth links (va1-vb1, va2-vb2)
    with the same addresses on both: fe80::1 on the relay's side, fe80::2 on the other."""
    relay_ns, vtep_ns = lab.namespace("a"), lab.namespace("b")
    for k in (1, 2):
        ip("-n", relay_ns, "link", "add", f"va{k}", "type", "veth", "peer", "name", f"vb{k}",
           "netns", vtep_ns)
        for ns, dev, addr in ((relay_ns, f"va{k}", RELAY), (vtep_ns, f"vb{k}", VTEP)):
            ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
    assert ifindex(relay_ns, "va1") != ifindex(relay_ns, "va2")
    return relay_ns, vtep_ns


def test_a_link_local_endpoint_is_matched_on_its_link_too(lab: Lab) -> None:
    # The endpoint is fe80::2 on link 1; the same address on link 2 is a stranger.
    relay_ns, vtep_ns = two_links(lab)
    link1 = ifindex(relay_ns, "va1")
    hub = Hub(switch=Switch(forwarding=True))
    with contextlib.ExitStack() as closing:
        peer, stranger = (closing.enter_context(udp6_in(vtep_ns, VTEP, ifindex(vtep_ns, dev),
                                                        4789)) for dev in ("vb1", "vb2"))
        vx_sock = closing.enter_context(udp6_in(relay_ns, "::", 0, 4789))
        guest, port_sock = (closing.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                            for _ in range(2))
        closing.callback(hub.close)
        guest.bind(("127.0.0.1", 0))
        port_sock.bind(("127.0.0.1", 0))
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


def test_one_address_on_two_links_is_two_endpoints(lab: Lab) -> None:
    # A switch with fe80::2 on each link as a remote endpoint of its own: frames from both
    # reach the guest, and each answer goes out on the link its MAC was learned on only.
    relay_ns, vtep_ns = two_links(lab)
    gport, rport = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    with contextlib.ExitStack() as closing:
        vteps = [closing.enter_context(udp6_in(vtep_ns, VTEP, ifindex(vtep_ns, f"vb{k}"), 4789))
                 for k in (1, 2)]
        guest = closing.enter_context(socket_in(relay_ns))
        guest.bind(("127.0.0.1", gport))
        relay = lab.relay("--switch", "-l", f"127.0.0.1:{free_port()}",
                          f"vxlan:{VNI}:4789:[{VTEP}%va1]:4789,peer=[{VTEP}%va2]:4789",
                          f"{rport}:127.0.0.1:{gport}", ns=relay_ns)
        macs = (PEER_MAC, STRANGER_MAC)
        for k, sock in enumerate(vteps):
            hello = vxlan(b"\xff" * 6 + macs[k] + b"\x88\xb5" + bytes([k]) * 50)
            deadline = time.monotonic() + 10
            while not readable(guest):  # until the relay is up: until then ICMP eats them
                assert_running(relay)
                assert time.monotonic() < deadline, "no frame came"
                sock.sendto(hello, (RELAY, 4789, 0, ifindex(vtep_ns, f"vb{k + 1}")))
                select.select([guest], [], [], 0.2)
            got = drain(guest)
            assert got and all(f[6:12] == macs[k] and f.endswith(bytes([k]) * 50) for f in got)
        for k in (1, 0):
            frame = macs[k] + GUEST_MAC + b"\x88\xb5" + b"G" * 50
            guest.sendto(frame, ("127.0.0.1", rport))
            assert select.select([vteps[k]], [], [], 3)[0], f"nothing on link {k + 1}"
            assert vteps[k].recv(2048) == vxlan(frame)
        time.sleep(0.2)
        assert not drain(vteps[0]) and not drain(vteps[1])
        assert_running(relay)


def test_tcp_and_udp_targets_reach_a_link_local_peer_on_its_link(lab: Lab) -> None:
    # Point to point between a TCP target on link 1 and a UDP target on link 2, both
    # fe80::2: connect() needs the link, and the UDP peer on link 2 gets its frames there.
    relay_ns, vtep_ns = two_links(lab)
    tport, uport, lport = (free_port(kind=k) for k in
                           (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_DGRAM))
    with contextlib.ExitStack() as closing:
        listener = closing.enter_context(socket_in(vtep_ns, socket.AF_INET6, socket.SOCK_STREAM))
        others = [closing.enter_context(socket_in(vtep_ns, socket.AF_INET6))
                  for _ in (1, 2)]
        listener.bind((VTEP, tport, 0, ifindex(vtep_ns, "vb1")))
        listener.listen(1)
        for k, sock in enumerate(others):  # the UDP peer on link 2, a witness on link 1
            sock.bind((VTEP, uport, 0, ifindex(vtep_ns, f"vb{2 - k}")))
        udp, witness = others
        relay = lab.relay(f"[{VTEP}%va1]:{tport}", f"{lport}:[{VTEP}%va2]:{uport}", ns=relay_ns)
        assert select.select([listener], [], [], 10)[0], "the relay did not connect"
        conn = closing.enter_context(listener.accept()[0])
        frame = PEER_MAC + GUEST_MAC + b"\x88\xb5" + b"T" * 50
        conn.sendall(struct.pack(">I", len(frame)) + frame)
        assert select.select([udp], [], [], 3)[0], "nothing on link 2"
        assert udp.recv(2048) == frame
        back = GUEST_MAC + PEER_MAC + b"\x88\xb5" + b"U" * 50
        udp.sendto(back, (RELAY, lport, 0, ifindex(vtep_ns, "vb2")))
        conn.settimeout(3)
        assert conn.recv(4 + len(back), socket.MSG_WAITALL) == struct.pack(">I", len(back)) + back
        assert not drain(witness)
        assert_running(relay)


def test_a_tls_target_checks_the_address_not_the_link(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The server's certificate names fe80::2; the target says [fe80::2%va1].
    relay_ns, vtep_ns = two_links(lab)
    ca = LocalCA(str(tmp_path))
    server, client = ca.issue("vtep", ips=(VTEP,)), ca.issue("relay")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    context.load_verify_locations(ca.path)
    context.verify_mode = ssl.CERT_REQUIRED
    tport, lport, gport = (free_port(kind=k) for k in
                           (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_DGRAM))
    with contextlib.ExitStack() as closing:
        listener = closing.enter_context(socket_in(vtep_ns, socket.AF_INET6, socket.SOCK_STREAM))
        guest = closing.enter_context(socket_in(relay_ns))
        listener.bind((VTEP, tport, 0, ifindex(vtep_ns, "vb1")))
        listener.listen(1)
        guest.bind(("127.0.0.1", gport))
        relay = lab.relay("--tls-cert", client.cert, "--tls-key", client.key, "--tls-ca", ca.path,
                          f"[{VTEP}%va1]:{tport},tls", f"{lport}:127.0.0.1:{gport}", ns=relay_ns)
        assert select.select([listener], [], [], 10)[0], "the relay did not connect"
        raw = listener.accept()[0]
        raw.settimeout(5)
        conn = closing.enter_context(context.wrap_socket(raw, server_side=True))
        frame = PEER_MAC + GUEST_MAC + b"\x88\xb5" + b"L" * 50
        conn.sendall(struct.pack(">I", len(frame)) + frame)
        assert select.select([guest], [], [], 5)[0], "nothing came through the TLS link"
        assert guest.recv(2048) == frame
        assert_running(relay)


def test_local_addresses_with_a_link(lab: Lab) -> None:
    # A hub listening on [fe80::1%va1] and a UDP target bound (--bind) to fe80::1%va2: a
    # client on link 1 and a UDP peer on link 2 trade frames through it.
    relay_ns, vtep_ns = two_links(lab)
    tport, lport, uport = (free_port(kind=k) for k in
                           (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_DGRAM))
    link1, link2 = ifindex(vtep_ns, "vb1"), ifindex(vtep_ns, "vb2")
    with contextlib.ExitStack() as closing:
        udp = closing.enter_context(socket_in(vtep_ns, socket.AF_INET6))
        udp.bind((VTEP, uport, 0, link2))
        relay = lab.relay("--bind", f"{RELAY}%va2", "-l", f"[{RELAY}%va1]:{tport}",
                          f"{lport}:[{VTEP}%va2]:{uport}", ns=relay_ns)
        client = closing.enter_context(connect_in(vtep_ns, (RELAY, tport, 0, link1), relay,
                                                  "the scoped listener"))
        frame = PEER_MAC + GUEST_MAC + b"\x88\xb5" + b"B" * 50
        client.sendall(struct.pack(">I", len(frame)) + frame)
        assert select.select([udp], [], [], 5)[0], "nothing on link 2"
        got, source = udp.recvfrom(2048)
        assert got == frame and source[:2] == (RELAY, lport) and source[3] == link2
        back = GUEST_MAC + PEER_MAC + b"\x88\xb5" + b"b" * 50
        udp.sendto(back, (RELAY, lport, 0, link2))
        client.settimeout(5)
        assert client.recv(4 + len(back), socket.MSG_WAITALL) == struct.pack(">I", len(back)) + back
        assert_running(relay)


def test_the_metrics_listener_with_a_link(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    relay_ns, vtep_ns = two_links(lab)
    mport = free_port()
    config = tmp_path / "fastrelay.toml"
    config.write_text(f'[daemon]\nmetrics = "[{RELAY}%va1]:{mport}"\n\n'
                      f'[hub.h]\nlisten = "127.0.0.1:{free_port()}"\n')
    relay = lab.relay("--config", str(config), ns=relay_ns)
    with connect_in(vtep_ns, (RELAY, mport, 0, ifindex(vtep_ns, "vb1")), relay,
                    "the metrics listener") as http:
        http.settimeout(5)
        http.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := http.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], reply[:200]
    assert b"fastrelay_" in reply


def test_a_scoped_connect_that_times_out_is_retried_and_leaks_nothing(lab: Lab, caplog) -> None:  # type: ignore[no-untyped-def]
    # fe80::99 on link 1 is a neighbour nobody answers for: every SYN is lost, so each
    # attempt of the scoped connect() waits out connect_timeout, on uvloop as the relay runs.
    relay_ns, _ = two_links(lab)
    ip("-n", relay_ns, "neigh", "add", "fe80::99", "lladdr", "02:00:00:00:00:99", "nud",
       "permanent", "dev", "va1")
    caplog.set_level(logging.DEBUG, "fastrelay")
    udp = free_port(kind=socket.SOCK_DGRAM)
    targets = [parse_target("[fe80::99%va1]:9"), parse_target(f"{udp}:127.0.0.1:{udp + 1}")]
    options = RelayOptions(reconnect=True, connect_timeout=0.1,
                           backoff={"initial": 0.02, "maximum": 0.05})

    async def main() -> list[int]:
        relay = Relay(targets, options, point_to_point=True)
        fds = []
        try:
            await relay.start()
            for _ in range(6):
                await asyncio.sleep(0.5)
                fds.append(len(os.listdir("/proc/self/fd")))
        finally:
            relay.close()
        return fds

    netns.pushns(relay_ns)  # the relay's sockets, and its link names, are relay_ns's
    try:
        fds = uvloop.run(main())
    finally:
        netns.popns()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection timed out" in text and "Invalid argument" not in text, text
    assert text.count("connection timed out") >= 10, text  # ~20 attempts in 3 s
    # An attempt in flight holds one socket; a leak would grow with the attempts.
    assert max(fds) - min(fds) <= 1, f"descriptors while retrying: {fds}"


def connect_in(ns: str, address: tuple[str, int, int, int], relay: subprocess.Popen[bytes],
               what: str) -> socket.socket:
    """A TCP connection from namespace ns to address, tried until it is up (10 s at most)
    while the relay runs."""
    deadline = time.monotonic() + 10
    while True:
        sock = socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
        if sock.connect_ex(address) == 0:
            return sock
        sock.close()
        assert_running(relay)
        assert time.monotonic() < deadline, f"{what} never came up"
        time.sleep(0.1)


def assert_running(relay: subprocess.Popen[bytes]) -> None:
    if relay.poll() is not None:
        assert relay.stderr is not None
        pytest.fail(f"the relay exited: {relay.stderr.read().decode().strip()}")

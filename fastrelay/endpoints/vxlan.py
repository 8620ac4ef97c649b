"""VXLAN endpoint: one bound UDP socket, the remote tunnel endpoints resolved once at start."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

from .._core import VxlanPort
from ..errors import StartError
from ..targets import VxlanTarget
from .base import Endpoint, adopt, resolve
from .dgram import bind_udp, grow_buffers

if TYPE_CHECKING:
    from .._core import Port
    from ..relay import Relay

__all__ = ["VxlanEndpoint", "VXLAN_COUNTERS"]

# The VXLAN port's own counters (VxlanPort.stats()), reported per endpoint: datagrams of
# another VNI or without the I flag, from an address that is no remote endpoint, frames too
# big for the path (never fragmented), and copies sent by head-end replication.
VXLAN_COUNTERS = ("drop_vni", "drop_foreign", "drop_mtu", "replicated")


def _link_local(host: object) -> bool:
    return ipaddress.ip_address(str(host)).is_link_local


def _scope(address: tuple[object, ...]) -> int:
    """The link (interface index) of an IPv6 address, 0 for none and for IPv4."""
    return int(address[3]) if len(address) > 3 else 0  # type: ignore[call-overload]


def _key(address: tuple[object, ...]) -> tuple[object, ...]:
    """What names a remote endpoint: address, port and, for IPv6, the link."""
    return (*address[:2], _scope(address))


def _show(address: tuple[object, ...]) -> str:
    """ADDRESS:PORT as written in a target: [v6%link]:port, v4:port."""
    host, port = address[:2]
    if ":" not in str(host):
        return f"{host}:{port}"
    scope = _scope(address)
    if scope:
        try:
            host = f"{host}%{socket.if_indextoname(scope)}"
        except OSError:
            host = f"{host}%{scope}"
    return f"[{host}]:{port}"


class VxlanEndpoint(Endpoint):
    """`vxlan:VNI:LPORT:HOST:RPORT[,peer=HOST:PORT]...`: a VXLAN tunnel endpoint.

    Every remote endpoint is resolved at start (all to one address family, that of the
    first), the socket is bound to LPORT, and the data plane's VxlanPort does the rest
    (header, VNI and source checks, replication, don't-fragment). Like a UDP port it never
    ends by itself. Its port always joins the switch as a trunk (the data plane sees to it).
    """

    target: VxlanTarget

    def __init__(self, target: VxlanTarget, relay: Relay) -> None:
        super().__init__(target, relay)
        self.trunk = True
        self._retired = dict.fromkeys(VXLAN_COUNTERS, 0)  # counters of ports already closed
        self._ports: list[VxlanPort] = []
        self._peers: list[tuple[object, ...]] = []  # the remote endpoints' addresses, resolved

    async def start(self) -> None:
        family, peers = await self._resolve()
        self._peers = peers
        sock = bind_udp(str(self), family, self.relay.options.bind, self.target.lport)
        grow_buffers(sock)
        sock.setblocking(False)
        fd = sock.detach()
        port = adopt([fd], lambda: VxlanPort(fd, str(self), family=family, peers=peers,
                                             vni=self.target.vni,
                                             **self.relay.options.port_kwargs))
        self._ports.append(port)
        self.relay.attach(port, self)

    async def _resolve(self) -> tuple[int, list[tuple[object, ...]]]:
        """The address family and the address of every remote endpoint (StartError if one
        cannot be resolved, has no address of the first one's family, or repeats one)."""
        family = 0
        peers: list[tuple[object, ...]] = []
        for host, port in self.target.peers:
            infos = await resolve(str(self), host, port, socket.SOCK_DGRAM)
            if not family:
                family = infos[0][0]
            address = next((a for f, a in infos if f == family), None)
            if address is None:
                kind = "IPv6" if family == socket.AF_INET6 else "IPv4"
                raise StartError(str(self), f"remote endpoint {host!r} has no {kind} address "
                                            f"(every endpoint must be {kind}, as the first)")
            if family == socket.AF_INET6 and not _scope(address) and _link_local(address[0]):
                # The kernel names such a source with the link it came in on: an endpoint
                # without one would be sent to (by route) but never recognised.
                raise StartError(str(self), f"remote endpoint {host!r} is link-local: name "
                                            f"its link, as [{address[0]}%eth0]:{port}")
            if _key(address) in [_key(p) for p in peers]:
                raise StartError(str(self), f"remote endpoint {host!r} port {port} is "
                                            f"{_show(address)} again")
            peers.append(address)
        return family, peers

    def remote_name(self, index: int) -> str:
        """ADDRESS:PORT of remote endpoint index (as the data plane numbers them)."""
        if not 0 <= index < len(self._peers):
            return f"#{index}"
        return _show(self._peers[index])

    def counters(self) -> dict[str, int]:
        """VXLAN_COUNTERS over every port this endpoint has had (closed ones included)."""
        out = dict(self._retired)
        for port in self._ports:
            stats = port.stats()
            for name in VXLAN_COUNTERS:
                out[name] += stats[name]
        return out

    def port_closed(self, port: Port, reason: str, fault: bool) -> None:
        if isinstance(port, VxlanPort) and port in self._ports:
            stats = port.stats()
            for name in VXLAN_COUNTERS:
                self._retired[name] += stats[name]
            self._ports.remove(port)
        super().port_closed(port, reason, fault)

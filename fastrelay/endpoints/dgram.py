"""Datagram endpoints (UDP and unix datagrams): one bound socket, one peer address."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from .. import defaults
from .._core import DatagramPort
from ..errors import StartError
from ..targets import UDPTarget, UnixDgramTarget
from .base import (
    Endpoint,
    SocketFile,
    adopt,
    check_unix_path,
    local_address,
    remove_stale_socket,
    resolve,
)

if TYPE_CHECKING:
    from ..relay import Relay

__all__ = ["DatagramEndpoint", "bind_udp", "grow_buffers"]


def grow_buffers(sock: socket.socket) -> None:
    """Ask for DGRAM_SOCKET_BUFFER bytes of receive and send buffer (bursts of datagrams)."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, defaults.DGRAM_SOCKET_BUFFER)
        except OSError:
            pass  # capped by net.core.[rw]mem_max: the smaller buffer still works


def bind_udp(where: str, family: int, bind: str | None, lport: int) -> socket.socket:
    """A UDP socket of `family` bound to `lport` on `bind` (every address when None), or
    StartError naming `where` and why it cannot be had."""
    host = bind or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    address = local_address(where, host, lport)
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise StartError(where, f"cannot open a UDP socket: {exc.strerror or exc}") from None
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartError(where, f"cannot bind UDP port {lport}: "
                                f"{exc.strerror or exc}") from None
    return sock


class DatagramEndpoint(Endpoint):
    """`LPORT:HOST:SPORT` (qemu socket udp= / dgram inet) or `unixgram:LOCAL[:REMOTE]`.

    The socket is bound to the local port or path and receives from any source, as qemu
    does; frames go to the fixed peer (or, for unixgram without REMOTE, to the last sender).
    A datagram port never ends by itself: an absent peer only costs dropped frames.
    """

    target: UDPTarget | UnixDgramTarget

    def __init__(self, target: UDPTarget | UnixDgramTarget, relay: Relay) -> None:
        super().__init__(target, relay)
        self._file: SocketFile | None = None  # the unix socket file we bound

    async def start(self) -> None:
        target = self.target
        if isinstance(target, UDPTarget):
            sock, family, peer = await self._open_udp(target)
        else:
            for path in (target.local, target.remote):
                if path is not None:
                    check_unix_path(str(self), path)
            sock, family, peer = self._open_unix(target), socket.AF_UNIX, target.remote
        try:
            grow_buffers(sock)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        fd = sock.detach()
        port = adopt([fd], lambda: DatagramPort(fd, str(self), family=family, peer=peer,
                                                learn_peer=peer is None,
                                                **self.relay.options.port_kwargs))
        self.relay.attach(port, self)

    async def _open_udp(self, target: UDPTarget) -> tuple[socket.socket, int, object]:
        family, peer = (await resolve(str(self), target.host, target.sport,
                                      socket.SOCK_DGRAM))[0]
        sock = bind_udp(str(self), family, self.relay.options.bind, target.lport)
        return sock, family, peer

    def _open_unix(self, target: UnixDgramTarget) -> socket.socket:
        local = target.local
        remove_stale_socket(local)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as exc:
            raise StartError(str(self), f"cannot open a socket: "
                                        f"{exc.strerror or exc}") from None
        try:
            sock.bind(local)
        except OSError as exc:
            sock.close()
            raise StartError(str(self), f"cannot bind {local!r}: {exc.strerror or exc}") from None
        if not local.startswith("\0"):
            try:
                self._file = SocketFile(local)
            except OSError as exc:
                sock.close()
                raise StartError(str(self), f"cannot bind {local!r}: "
                                            f"{exc.strerror or exc}") from None
        return sock

    def close(self) -> None:
        super().close()
        if self._file is not None:
            self._file.remove()  # only if it is still ours
            self._file = None

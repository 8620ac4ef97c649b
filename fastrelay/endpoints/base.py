"""Endpoint: the control-plane side of one target (opening, re-opening, closing its ports)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._core import TUN_CONSTANTS
from ..errors import StartError

if TYPE_CHECKING:
    from .._core import Port
    from ..relay import Relay

log = logging.getLogger("fastrelay")

__all__ = ["Endpoint", "SocketFile", "adopt", "check_unix_path", "local_address",
           "remove_stale_socket", "resolve"]

P = TypeVar("P")

# sockaddr_un.sun_path: 108 bytes, a path's terminating NUL included.
_SUN_PATH = 108


async def resolve(where: str, host: str, port: int,
                  kind: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, address) of host:port for sockets of kind, in getaddrinfo()'s order, or
    StartError naming `where`. A link-local IPv6 host written with its link (fe80::2%eth0)
    keeps that link in its scope id: uvloop's getaddrinfo() (0.23 here) returns 0 there,
    and a link-local address without its link cannot be connected to, nor told apart from
    the same address on another link. So the link is split off and looked up here."""
    bare, scope = _link(where, host)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(bare, port, type=kind)
    except socket.gaierror as exc:
        raise StartError(where, f"cannot resolve {host!r}: {exc.strerror}") from None
    return [(family, (*addr[:3], scope) if family == socket.AF_INET6 and scope else addr)
            for family, _, _, _, addr in infos]


def local_address(where: str, host: str, port: int) -> tuple[Any, ...]:
    """The address to bind() for a local IP literal host (--bind, listen:HOST:PORT), its
    %link in the scope id: Python's bind() takes no scope from a 2-tuple's text."""
    bare, scope = _link(where, host)
    return (bare, port, 0, scope) if scope else (host, port)


def _link(where: str, host: str) -> tuple[str, int]:
    """host without its %link, and the link's interface index (0: none written)."""
    if "%" not in host:
        return host, 0
    bare, _, link = host.partition("%")
    try:
        address = ipaddress.IPv6Address(bare)
    except ValueError:
        raise StartError(where, f"cannot resolve {host!r}: only an IPv6 address "
                                f"has a %link") from None
    if not (address.is_link_local or address.is_multicast):
        raise StartError(where, f"cannot resolve {host!r}: only a link-local address "
                                f"has a %link") from None
    try:
        return bare, socket.if_nametoindex(link)
    except OSError:
        pass
    if link.isdigit():
        try:
            socket.if_indextoname(int(link))
            return bare, int(link)
        except (OSError, OverflowError):
            pass
    hint = " (%25 is URL encoding: write %eth0)" if link.startswith("25") else ""
    raise StartError(where, f"cannot resolve {host!r}: no link {link!r} here{hint}")


def check_unix_path(what: str, path: str) -> None:
    """StartError unless path fits a unix socket address (abstract names start with NUL)."""
    size = len(os.fsencode(path)) + (0 if path.startswith("\0") else 1)
    if size > _SUN_PATH:
        raise StartError(what, f"unix socket path too long ({size} bytes with its end; "
                               f"at most {_SUN_PATH})")


def _identity(fd: int) -> tuple[Any, ...] | None:
    """What fd is open on (file and, for a tap, its interface), or None if it is closed."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    tun = b""
    if stat.S_ISCHR(st.st_mode):
        # Every /dev/net/tun descriptor has the same inode: the interface tells them apart.
        try:
            tun = fcntl.ioctl(fd, TUN_CONSTANTS["TUNGETIFF"], bytes(40))[:16]
        except OSError:
            pass
    return st.st_dev, st.st_ino, st.st_rdev, tun


def adopt(fds: Sequence[int], build: Callable[[], P]) -> P:
    """build() a data-plane port around descriptors handed over to it; the port's result.

    A built port owns fds and closes them. A port whose constructor fails may already
    have closed them (Port.__dealloc__ closes what the base constructor took), or not
    (when the arguments failed before): closing them again could close a descriptor
    that another thread has just been given. So on failure only the descriptors that
    are still open on the very file they were handed over on are closed here.
    """
    before = [_identity(fd) for fd in fds]
    try:
        return build()
    except BaseException:
        for fd, identity in zip(fds, before):
            if identity is not None and _identity(fd) == identity:
                os.close(fd)
        raise


def remove_stale_socket(path: str) -> None:
    """Remove a unix socket left at path by an earlier run that is gone.

    Only a socket that nobody serves is stale: a connect is tried first, and only
    ECONNREFUSED (nothing bound there) lets it go. A live socket of another running
    instance stays, and the bind that follows fails with "Address already in use".
    Never a file of another kind; abstract names (starting with NUL) have nothing on disk.
    """
    if path.startswith("\0"):
        return
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    if _socket_in_use(path):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _socket_in_use(path: str) -> bool:
    """Whether something answers at the unix socket path (of any socket type)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        try:
            probe = socket.socket(socket.AF_UNIX, kind | socket.SOCK_NONBLOCK)
        except OSError:
            return True  # cannot tell (out of descriptors?): leave it be
        with probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                return False
            except OSError as exc:
                if exc.errno == errno.EPROTOTYPE:
                    continue  # a socket of another type is bound there: ask as that type
                return True  # EAGAIN (a full backlog), EACCES, ...: not known to be stale
            return True
    return True


class SocketFile:
    """The file a unix socket was bound to, removed at close only if it is still ours.

    Another instance may have replaced it since (after removing ours as stale, or by
    hand): that one's socket must survive our exit. Ours is told apart by its device,
    inode and change time (ext4 gives a freed inode number to the next new file), taken
    once our set-up of the file is done.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = self._identity()

    def _identity(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_dev, st.st_ino, st.st_ctime_ns

    def remove(self) -> None:
        """Unlink the path if it is still the socket we bound; quietly otherwise."""
        try:
            if self._identity() == self.identity:
                os.unlink(self.path)
        except OSError:
            pass


class Endpoint(abc.ABC):
    """One target of a relay.

    Lifecycle: `start()` opens the target and attaches its port(s) to the relay's hub, or
    raises StartError with the reason; the relay then calls `port_closed()` for each of
    its ports that the data plane closes, and the endpoint decides what follows (reconnect,
    accept again, or `relay.endpoint_ended()`); `close()` releases everything it holds.
    """

    def __init__(self, target: Any, relay: Relay) -> None:
        self.target = target
        self.relay = relay
        self.closed = False
        self.reconnects = 0  # connections made again after a loss (kinds that reconnect)
        self.refused = 0     # clients accepted and closed at once: too many (listeners)
        self.refused_allow = 0  # clients closed at accept: not in the allowlist (listeners)
        self.handshakes = 0  # TLS handshakes completed
        self.handshake_failures: dict[str, int] = {}  # failed TLS handshakes, by kind
        # `,trunk`: a link to another relay; each of the endpoint's ports joins the hub's
        # switch as a trunk port (split horizon). Stdio has no such field: never a trunk.
        self.trunk: bool = getattr(target, "trunk", False)

    def __str__(self) -> str:
        return str(self.target)

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the target and attach its port(s)."""

    def port_closed(self, port: Port, reason: str, fault: bool) -> None:
        """A port of ours was closed by the data plane (the relay has logged it)."""
        self.relay.endpoint_ended(self, reason)

    def handshake_failed(self, kind: str) -> None:
        """Count a failed TLS handshake (kinds: tls.FAILURE_KINDS)."""
        self.handshake_failures[kind] = self.handshake_failures.get(kind, 0) + 1

    def close(self) -> None:
        """Release sockets, files and tasks (ports are closed by the relay's hub)."""
        self.closed = True

"""Stream endpoints (TCP and unix): clients that connect out, listeners that accept."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import defaults
from .._core import StreamPort, TLSPort, TLSSession
from ..backoff import Backoff
from ..errors import StartError
from ..targets import TCPListenTarget, TCPTarget, UnixListenTarget, UnixTarget
from ..tls import TLSError, TLSSetupError, allowed, handshake
from .base import Endpoint, SocketFile, adopt, local_address, log, remove_stale_socket, resolve

if TYPE_CHECKING:
    from .._core import Port
    from ..relay import Relay

__all__ = ["StreamClientEndpoint", "StreamListenerEndpoint"]

# What accept(2) reports for one client that failed before it was taken (Linux passes
# such network errors on): that client is gone, the listener is fine.
_CLIENT_GONE = frozenset((errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM,
                          errno.ENETDOWN, errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET,
                          errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
                          errno.ETIMEDOUT))


def _show_path(path: str) -> str:
    return "@" + path[1:] if path.startswith("\0") else path


def _peer_text(addr: object) -> str:
    """An accepted peer's address as text (unix clients are usually unnamed)."""
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _show_path(addr) if isinstance(addr, str) and addr else "(unnamed)"


def _oserror_text(exc: OSError) -> str:
    """The errno text (uvloop's connect errors put the address where strerror goes)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


async def _sock_connect(sock: socket.socket, addr: Any) -> None:
    """loop.sock_connect(), but for an IPv6 address with a link (scope id) a plain
    non-blocking connect() and a wait until writable: uvloop (0.23 here) resolves the
    address again and drops its scope, and a link-local connect() then fails (EINVAL)."""
    loop = asyncio.get_running_loop()
    if not (sock.family == socket.AF_INET6 and len(addr) > 3 and addr[3]):
        await loop.sock_connect(sock, addr)
        return
    err = sock.connect_ex(addr)
    if err in (errno.EINPROGRESS, errno.EINTR):  # EINTR: it goes on, as asyncio has it
        writable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not writable.done():
                writable.set_result(None)

        loop.add_writer(sock, ready)
        try:
            await writable
        finally:
            loop.remove_writer(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def _tune(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Frames are latency-sensitive and we already write in large batches.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StreamClientEndpoint(Endpoint):
    """Connects out (`HOST:PORT`, `unix:PATH`); with reconnect on, keeps doing so.

    Reconnects wait for the back-off's next delay. The back-off starts over only once a
    connection has stayed up for RECONNECT_STABLE_AFTER seconds: a peer that accepts and
    closes at once is retried at growing intervals, not every `initial` seconds. Any
    failure while connecting, of any kind, is one log line and another try.
    """

    target: TCPTarget | UnixTarget

    def __init__(self, target: TCPTarget | UnixTarget, relay: Relay) -> None:
        super().__init__(target, relay)
        self.backoff = Backoff(**relay.options.backoff)
        self._retry: asyncio.Task[None] | None = None
        self._connected_at = 0.0

    def __str__(self) -> str:
        if isinstance(self.target, UnixTarget):
            return f"unix {_show_path(self.target.path)}"
        return str(self.target)

    async def _addresses(self) -> list[tuple[int, tuple[Any, ...] | str]]:
        if isinstance(self.target, UnixTarget):
            return [(socket.AF_UNIX, self.target.path)]
        return list(await resolve(str(self), self.target.host, self.target.port,
                                  socket.SOCK_STREAM))

    async def _connect(self) -> None:
        """Connect and attach the port; StartError with the reason when it cannot."""
        loop = asyncio.get_running_loop()
        last = "no address"
        for family, addr in await self._addresses():
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                last = _oserror_text(exc)  # out of descriptors, say: the next try may do
                continue
            try:
                sock.setblocking(False)
                await asyncio.wait_for(_sock_connect(sock, addr),
                                       self.relay.options.connect_timeout)
                _tune(sock)
            except TimeoutError:
                sock.close()
                last = "connection timed out"
                continue
            except OSError as exc:
                sock.close()
                last = _oserror_text(exc)
                continue
            except BaseException:
                sock.close()
                raise
            session = None
            if isinstance(self.target, TCPTarget) and self.target.tls:
                try:
                    session = await self._handshake(sock)
                except TLSError as exc:
                    sock.close()
                    self.handshake_failed(exc.kind)
                    last = str(exc)
                    continue
                except BaseException:
                    sock.close()
                    raise
            fd = sock.detach()
            kind = StreamPort if session is None else partial(TLSPort, session=session)
            port = adopt([fd], partial(kind, fd, str(self), **self.relay.options.port_kwargs))
            self.relay.attach(port, self)
            self._connected_at = loop.time()
            return
        raise StartError(str(self), f"cannot connect: {last}")

    async def _handshake(self, sock: socket.socket) -> TLSSession:
        """TLS on a connected socket: the server's certificate must chain to the CA and
        name the target's host (or tls-name); TLSError with the reason when it does not."""
        assert isinstance(self.target, TCPTarget)
        options = self.relay.options
        try:
            context = options.tls.context(server=False)
        except TLSSetupError as exc:
            raise StartError(str(self), str(exc)) from None
        # The certificate names the address, not the link it is reached on (fe80::2%eth0).
        name = self.target.tls_name or options.tls_name or self.target.host.partition("%")[0]
        session = TLSSession(context, sock.fileno(), name)
        await handshake(session, options.tls_timeout)
        self.handshakes += 1
        return session

    async def start(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            if not self.relay.options.reconnect:
                raise
            log.warning("%s; retrying", _failure_text(self, exc))
            self._schedule()

    def port_closed(self, port: Port, reason: str, fault: bool) -> None:
        if self.relay.options.reconnect and not self.closed:
            loop = asyncio.get_running_loop()
            if loop.time() - self._connected_at >= defaults.RECONNECT_STABLE_AFTER:
                self.backoff.reset()
            self._schedule()
        else:
            self.relay.endpoint_ended(self, reason)

    def _schedule(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._retry_loop())

    async def _retry_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.backoff.next_delay())
            if self.closed:
                return
            try:
                await self._connect()
            except StartError as exc:
                # The first failure was logged as a warning; repeating it at every try
                # would flood a service's journal.
                log.debug("%s; retrying", exc)
                continue
            except Exception as exc:  # noqa: BLE001 (supervision: log and retry anything)
                # Not a network answer (a bug, or the process out of some resource):
                # say so, and keep trying: a supervisor never gives up in silence.
                self.relay.log_limit.log(logging.WARNING, ("connect", self), "%s; retrying",
                                         _failure_text(self, exc))
                continue
            self.reconnects += 1
            self.relay.log_limit.log(logging.INFO, ("reconnected", self), "%s: reconnected",
                                     self)
            return

    def close(self) -> None:
        super().close()
        if self._retry is not None:
            self._retry.cancel()


def _exception_text(exc: BaseException) -> str:
    """An exception in a few words: a StartError's or OSError's reason, else its type."""
    if isinstance(exc, StartError):
        return str(exc)
    if isinstance(exc, OSError):
        return _oserror_text(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _failure_text(endpoint: Endpoint, exc: BaseException) -> str:
    """One line for a failed connect: a StartError's own text, else the endpoint and why."""
    return str(exc) if isinstance(exc, StartError) else f"{endpoint}: {_exception_text(exc)}"


class StreamListenerEndpoint(Endpoint):
    """Accepts stream clients (`listen:`, `unix-listen:`, `-l`); each client is a port.

    In a hub every client joins, up to max_clients for this listener and
    max_clients_total for the relay: a client over either is accepted and closed at once
    (so it does not wait in the kernel's backlog), counted in `refused` and logged,
    rate-limited. In point-to-point mode one client is served at a time (the others wait
    in the kernel's backlog), like qemu's own `listen=`.

    When accept() fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    ENOMEM; any error that is not one client's), or an accepted client cannot be made a
    port, the listener stops watching its socket, which stays readable and would
    otherwise wake the loop for ever, and tries again after a back-off of ACCEPT_RETRY_*
    seconds: one line when it pauses, one when it accepts again.
    """

    target: TCPListenTarget | UnixListenTarget

    def __init__(self, target: TCPListenTarget | UnixListenTarget, relay: Relay) -> None:
        super().__init__(target, relay)
        self.sock: socket.socket | None = None
        self.clients = 0
        self.accepting = False
        self.kind = "unix" if isinstance(target, UnixListenTarget) else "tcp"
        self._retry_backoff = Backoff(initial=defaults.ACCEPT_RETRY_INITIAL,
                                      maximum=defaults.ACCEPT_RETRY_MAX)
        self._retry: asyncio.TimerHandle | None = None
        self._short_since: float | None = None  # since when accepting fails (a shortage)
        self._file: SocketFile | None = None    # the unix socket file we bound
        self.tls = isinstance(target, TCPListenTarget) and target.tls
        self._handshaking: set[asyncio.Task[None]] = set()  # TLS clients not attached yet

    def __str__(self) -> str:
        if isinstance(self.target, UnixListenTarget):
            return f"unix listener {_show_path(self.target.path)}"
        return str(self.target)

    def _bind(self) -> socket.socket:
        target = self.target
        if isinstance(target, UnixListenTarget):
            path = target.path
            remove_stale_socket(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                if not path.startswith("\0"):
                    self._file = SocketFile(path)
            except OSError:
                sock.close()
                raise
            return sock
        host = target.host if target.host is not None else self.relay.options.bind
        if host is None:
            # netrelay's hub: one dual-stack socket on every address.
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            except OSError:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                addr: tuple[str, int] = ("0.0.0.0", target.port)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                addr = ("::", target.port)
            infos = [(sock, addr)]
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            infos = [(socket.socket(family, socket.SOCK_STREAM),
                      local_address(str(self), host, target.port))]
        sock, addr = infos[0]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        if self.tls:
            try:
                self.relay.options.tls.context(server=True)
            except TLSSetupError as exc:
                raise StartError(str(self), str(exc)) from None
        try:
            sock = self._bind()
        except OSError as exc:
            raise StartError(str(self), f"cannot listen: {exc.strerror or exc}") from None
        try:
            sock.listen(defaults.LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise StartError(str(self), f"cannot listen: {exc.strerror or exc}") from None
        self.sock = sock
        self._resume()

    def _resume(self) -> None:
        if self.sock is not None and not self.accepting and not self.closed:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)
            self.accepting = True

    def _pause(self) -> None:
        if self.sock is not None and self.accepting:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.accepting = False

    def _accept(self) -> None:
        """The socket is readable: take the clients waiting (a bounded number per call)."""
        for _ in range(defaults.ACCEPTS_PER_WAKEUP):
            if self.sock is None or self._retry is not None:
                return
            if self.relay.point_to_point and self.clients:
                self._pause()
                return
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _CLIENT_GONE:
                    continue  # that client failed before we took it: the next one
                self._cannot_accept(f"cannot accept: {_oserror_text(exc)}")
                return
            self._can_accept()
            if self.relay.options.allow and self.kind == "tcp" and isinstance(addr, tuple) \
                    and not allowed(self.relay.options.allow, addr[0]):
                self._refuse_source(conn, addr)
                continue
            over = self._over_limit()
            if over is not None:
                self._refuse(conn, addr, over)
                continue
            try:
                self._take(conn, addr)
            except Exception as exc:  # noqa: BLE001 (any failure: say so, pause, retry)
                self._cannot_accept(f"cannot take a client: {_exception_text(exc)}")
                return

    def _over_limit(self) -> str | None:
        """Why one more client is refused now, or None (point to point: never)."""
        options = self.relay.options
        if self.relay.point_to_point:
            return None
        if self.clients >= options.max_clients:
            return f"{self.clients} clients already (max_clients {options.max_clients})"
        if self.relay.clients >= options.max_clients_total:
            return (f"{self.relay.clients} clients in the relay already "
                    f"(max_clients_total {options.max_clients_total})")
        return None

    def _take(self, conn: socket.socket, addr: object) -> None:
        """Make an accepted client a port of the hub."""
        try:
            conn.setblocking(False)
            _tune(conn)
        except BaseException:
            conn.close()
            raise
        name = f"{self.kind} client {_peer_text(addr)}"
        if self.tls:
            # The client holds its slot while it shakes hands (max_clients counts it).
            self.clients += 1
            self.relay.clients += 1
            task = asyncio.get_running_loop().create_task(self._take_tls(conn, name))
            self._handshaking.add(task)
            task.add_done_callback(self._handshaking.discard)
            return
        fd = conn.detach()
        port = adopt([fd], partial(StreamPort, fd, name, **self.relay.options.port_kwargs))
        self.relay.attach(port, self)
        self.clients += 1
        self.relay.clients += 1

    async def _take_tls(self, conn: socket.socket, name: str) -> None:
        """Shake hands with an accepted client, then make it a port; a client that fails
        (no or a bad certificate, not TLS, too slow) is closed with one log line."""
        options = self.relay.options
        attached = False
        try:
            session = TLSSession(options.tls.context(server=True), conn.fileno())
            await handshake(session, options.tls_timeout)
            self.handshakes += 1
            fd = conn.detach()
            port = adopt([fd], partial(TLSPort, fd, name, session=session,
                                       **options.port_kwargs))
            self.relay.attach(port, self)
            attached = True
        except TLSError as exc:
            self.handshake_failed(exc.kind)
            self.relay.log_limit.log(logging.WARNING, ("handshake", self, exc.kind),
                                     "%s: %s", name, exc)
        except Exception as exc:  # noqa: BLE001 (one client's failure: say so, go on)
            self.relay.log_limit.log(logging.WARNING, ("take", self), "%s: cannot take it: %s",
                                     name, _exception_text(exc))
        finally:
            conn.close()  # detached (a no-op) once the port owns the descriptor
            if not attached:
                self.clients -= 1
                self.relay.clients -= 1
                self._resume_point_to_point()

    def _resume_point_to_point(self) -> None:
        if self.relay.point_to_point and not self.clients and self._retry is None:
            self._resume()

    def _refuse_source(self, conn: socket.socket, addr: tuple[Any, ...]) -> None:
        """Close a client from outside the allowlist at once; one log line per source and
        interval (a scanner may knock thousands of times)."""
        self.refused_allow += 1
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.relay.allow_log.log(logging.WARNING, ("allow", self, addr[0]),
                                 "%s: refused %s: not in the allowlist", self, _peer_text(addr))

    def _refuse(self, conn: socket.socket, addr: object, why: str) -> None:
        """Close a client over the limits at once (reset: nothing lingers), count, log."""
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.relay.log_limit.log(logging.WARNING, ("refused", self), "%s: refused client %s: %s",
                                 self, _peer_text(addr), why)

    def _cannot_accept(self, reason: str) -> None:
        """Out of descriptors or memory: stop watching the socket, try again later."""
        self._pause()
        loop = asyncio.get_running_loop()
        delay = self._retry_backoff.next_delay()
        if self._short_since is None:
            self._short_since = loop.time()
            self.relay.log_limit.log(
                logging.WARNING, ("short", self),
                "%s: %s; pausing accepts (out of descriptors or memory?), retrying every "
                "%g to %gs until it works", self, reason, defaults.ACCEPT_RETRY_INITIAL,
                defaults.ACCEPT_RETRY_MAX)
        self._retry = loop.call_later(delay, self._retry_accept)

    def _retry_accept(self) -> None:
        self._retry = None
        if self.sock is None or self.closed:
            return
        if not (self.relay.point_to_point and self.clients):
            self._resume()
            self._accept()

    def _can_accept(self) -> None:
        """An accept worked: end a shortage, if there was one."""
        if self._short_since is not None:
            waited = asyncio.get_running_loop().time() - self._short_since
            self._short_since = None
            self._retry_backoff.reset()
            self.relay.log_limit.log(logging.WARNING, ("recovered", self),
                                     "%s: accepting again after %.1fs", self, waited)

    def port_closed(self, port: Port, reason: str, fault: bool) -> None:
        self.clients -= 1
        self.relay.clients -= 1
        if self.relay.point_to_point:
            if self.relay.options.reconnect:
                if self._retry is None:
                    self._resume()
            else:
                self.relay.endpoint_ended(self, reason)

    def close(self) -> None:
        super().close()
        for task in list(self._handshaking):
            task.cancel()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._pause()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._file is not None:
            self._file.remove()  # only if it is still ours
            self._file = None

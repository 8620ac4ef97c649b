"""The daemon's own listeners (metrics, control): one request per connection, even at EMFILE."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from . import defaults

log = logging.getLogger("fastrelay")

__all__ = ["OneShotServer", "RequestTooLong", "read_until"]


class RequestTooLong(Exception):
    """A client sent more than a request may hold before its end."""


async def read_until(conn: socket.socket, ends: tuple[bytes, ...], limit: int) -> bytes | None:
    """Read from conn up to and including the first of ends; None if the client stopped
    sending first, RequestTooLong when limit bytes came without one."""
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        found = [i + len(end) for end in ends if (i := data.find(end)) >= 0]
        if found:
            return data[:min(found)]
        if len(data) > limit:
            raise RequestTooLong
        chunk = await loop.sock_recv(conn, 4096)
        if not chunk:
            return None
        data += chunk


async def _linger(conn: socket.socket) -> None:
    """After the answer: end our side, then read and drop what the client still sends.

    Closing a socket with unread input resets the connection, and the client may then
    lose the answer it was sent (an over-long request, say). Bounded in bytes and time.
    """
    conn.shutdown(socket.SHUT_WR)
    loop = asyncio.get_running_loop()
    left = defaults.SERVICE_LINGER_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(defaults.SERVICE_LINGER):
            while left > 0:
                chunk = await loop.sock_recv(conn, min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)


class OneShotServer:
    """Accepts clients on listening sockets and awaits serve(conn) for each, then closes it
    (unless serve returned True: it handed the connection on, e.g. to a live capture).

    Not asyncio.start_server: when accept() fails with EMFILE, libuv accepts and closes
    every waiting client (its "EMFILE trick"), so `GET /metrics` would be reset exactly
    when an operator needs to see what is wrong. This server keeps a spare descriptor
    (/dev/null): at EMFILE it closes the spare, accepts the client into its place, and
    takes the spare back the moment that client is closed. A client that finds the spare
    in use, and a full house of SERVICE_CLIENTS_MAX clients, wait in the backlog; the
    server looks again after SERVICE_RETRY seconds (never a busy loop). Each client has
    REQUEST_TIMEOUT seconds in all.
    """

    def __init__(self, socks: list[socket.socket],
                 serve: Callable[[socket.socket], Awaitable[bool | None]], what: str) -> None:
        self.socks = socks
        self.serve = serve
        self.what = what
        self._spare: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watching = False
        self._retry: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Watch the sockets (bound, listening and non-blocking already)."""
        self._take_spare()
        self._watch()

    def _watch(self) -> None:
        if not self._watching and self.socks:
            loop = asyncio.get_running_loop()
            for sock in self.socks:
                loop.add_reader(sock.fileno(), self._accept, sock)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            loop = asyncio.get_running_loop()
            for sock in self.socks:
                loop.remove_reader(sock.fileno())
            self._watching = False

    def _take_spare(self) -> None:
        if self._spare is None:
            with contextlib.suppress(OSError):
                self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _later(self) -> None:
        """Stop watching; look again after SERVICE_RETRY seconds."""
        self._unwatch()
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(defaults.SERVICE_RETRY,
                                                                self._look_again)

    def _look_again(self) -> None:
        self._retry = None
        if len(self._tasks) < defaults.SERVICE_CLIENTS_MAX:
            self._watch()
        for sock in self.socks:
            self._accept(sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(defaults.ACCEPTS_PER_WAKEUP):
            if self._retry is not None or sock.fileno() < 0:
                return
            if len(self._tasks) >= defaults.SERVICE_CLIENTS_MAX:
                self._later()
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._spare is not None:
                    os.close(self._spare)  # the client takes its place
                    self._spare = None
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # that client is gone already
                self._later()
                return
            conn.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._run(conn))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._retry is None and len(self._tasks) < defaults.SERVICE_CLIENTS_MAX:
            self._watch()

    async def _run(self, conn: socket.socket) -> None:
        kept = False  # serve() returned True: the connection is someone else's now
        try:
            kept = bool(await asyncio.wait_for(self.serve(conn), defaults.REQUEST_TIMEOUT))
            if not kept:
                await _linger(conn)
        except (TimeoutError, OSError):
            pass  # a slow client, or one that left: nothing worth answering
        except Exception as exc:  # noqa: BLE001 (one client must not take the service down)
            log.warning("%s: cannot answer a client: %s: %s", self.what, type(exc).__name__, exc)
        finally:
            if not kept:
                conn.close()
            self._take_spare()  # at once: the descriptor just freed is the spare again

    async def close(self) -> None:
        """Stop listening, end the clients being served, release the spare."""
        self._unwatch()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sock in self.socks:
            sock.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

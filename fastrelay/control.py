"""Control socket: a unix socket where `fastrelay stats` asks the running daemon for its counters.

Protocol: the client sends one command line, the daemon answers and closes. Commands:
`stats` (the JSON document of metrics.stats_document) and `metrics` (Prometheus text).
The socket is made mode 0660: whoever may read it may see the counters, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable

from . import defaults
from .endpoints.base import SocketFile, remove_stale_socket
from .errors import RelayError, StartError
from .metrics import render_prometheus, stats_document
from .service import OneShotServer, RequestTooLong, read_until
from .stats import Snapshot

log = logging.getLogger("fastrelay")

__all__ = ["ControlServer", "query"]

_COMMANDS = ("stats", "metrics")


class ControlServer:
    """Serves the control socket at path from snapshot() (the daemon's links).

    A OneShotServer, so `fastrelay stats` still gets an answer when the daemon is out
    of descriptors. A command line longer than CONTROL_LINE_MAX is answered with an error.
    """

    def __init__(self, path: str, snapshot: Snapshot,
                 uptime: Callable[[], float]) -> None:
        self.path = path
        self.snapshot = snapshot
        self.uptime = uptime
        self.server: OneShotServer | None = None
        self._file: SocketFile | None = None

    async def start(self) -> None:
        what = f"control socket {self.path}"
        try:
            remove_stale_socket(self.path)  # left by a run that did not stop cleanly
        except OSError as exc:
            raise StartError(what, exc.strerror or str(exc)) from None
        sock = None
        bound = False
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.path)
            bound = True
            os.chmod(self.path, 0o660)  # before listen(): nobody else connects meanwhile
            self._file = SocketFile(self.path)
            sock.listen(defaults.LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            if sock is not None:
                sock.close()
            if bound:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)  # ours: we bound it a moment ago
            self._file = None
            raise StartError(what, f"cannot listen: {exc.strerror or exc}") from None
        self.server = OneShotServer([sock], self._serve, what)
        self.server.start()
        log.info("control socket %s", self.path)

    async def close(self) -> None:
        if self.server is None:
            return
        await self.server.close()
        self.server = None
        if self._file is not None:
            self._file.remove()  # only if it is still ours
            self._file = None

    async def _serve(self, conn: socket.socket) -> None:
        try:
            line = await read_until(conn, (b"\n",), defaults.CONTROL_LINE_MAX)
        except RequestTooLong:
            answer = json.dumps({"error": f"command longer than "
                                          f"{defaults.CONTROL_LINE_MAX} bytes"}) + "\n"
        else:
            if line is None:
                return  # the client left without a whole line
            answer = self._answer(line.decode("utf-8", "replace").strip())
        await asyncio.get_running_loop().sock_sendall(conn, answer.encode())

    def _answer(self, command: str) -> str:
        if command == "stats":
            document = stats_document(self.snapshot(tables=True), self.uptime())
            return json.dumps(document, indent=1) + "\n"
        if command == "metrics":
            return render_prometheus(self.snapshot())
        shown = command if len(command) <= 40 else command[:40] + "..."
        return json.dumps({"error": f"unknown command {shown!r}; "
                                    f"known: {', '.join(_COMMANDS)}"}) + "\n"


def query(path: str, command: str = "stats", timeout: float = defaults.REQUEST_TIMEOUT) -> str:
    """Send command to the daemon's control socket at path; its answer (RelayError if none)."""
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    break
                chunks.append(data)
    except OSError as exc:
        raise RelayError(f"cannot reach the daemon at {path}: "
                         f"{exc.strerror or exc} (is `fastrelay --config` running, "
                         f"with [daemon] control = {path!r}?)") from None
    return b"".join(chunks).decode()

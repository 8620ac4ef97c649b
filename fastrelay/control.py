"""Control socket: a unix socket where `fastrelay stats` asks the running daemon for its counters.

Protocol: the client sends one command line, the daemon answers and closes. Commands:
`stats` (the JSON document of metrics.stats_document) and `metrics` (Prometheus text).
The socket is made mode 0660: whoever may read it may see the counters, nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from collections.abc import Callable

from . import defaults
from .errors import RelayError, StartError
from .metrics import render_prometheus, stats_document
from .stats import LinkStats

log = logging.getLogger("fastrelay")

__all__ = ["ControlServer", "query"]

_COMMANDS = ("stats", "metrics")


class ControlServer:
    """Serves the control socket at path from snapshot() (the daemon's links)."""

    def __init__(self, path: str, snapshot: Callable[[], list[LinkStats]],
                 uptime: Callable[[], float]) -> None:
        self.path = path
        self.snapshot = snapshot
        self.uptime = uptime
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            if stat.S_ISSOCK(os.stat(self.path).st_mode):
                os.unlink(self.path)  # left by a run that did not stop cleanly
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StartError(f"control socket {self.path}", exc.strerror or str(exc)) from None
        try:
            self.server = await asyncio.start_unix_server(self._serve, self.path)
            os.chmod(self.path, 0o660)
        except OSError as exc:
            raise StartError(f"control socket {self.path}",
                             f"cannot listen: {exc.strerror or exc}") from None
        log.info("control socket %s", self.path)

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        await self.server.wait_closed()
        self.server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("control socket %s: cannot remove: %s", self.path, exc.strerror or exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), defaults.REQUEST_TIMEOUT)
            command = line.decode("utf-8", "replace").strip()
            if command == "stats":
                answer = json.dumps(stats_document(self.snapshot(), self.uptime()),
                                    indent=1) + "\n"
            elif command == "metrics":
                answer = render_prometheus(self.snapshot())
            else:
                answer = json.dumps({"error": f"unknown command {command!r}; "
                                              f"known: {', '.join(_COMMANDS)}"}) + "\n"
            writer.write(answer.encode())
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that said nothing or left: nothing to answer
        finally:
            writer.close()


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

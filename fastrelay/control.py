"""Control socket: a unix socket where `fastrelay stats` asks the running daemon for its counters.

Protocol: the client sends one command line, the daemon answers and closes. Commands:
`stats` (the JSON document of metrics.stats_document) and `metrics` (Prometheus text);
`capture LINK [PORT...]` (words quoted as a POSIX shell does: port names have spaces)
answers with a pcapng stream of the link's frames (capture.py) for as long as the client
keeps the connection open, or with one JSON line {"error": ...}: a stream begins with
the section header's bytes 0a 0d 0d 0a, never with "{". The socket is made mode 0660:
whoever may use it may see the counters and the frames, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import socket
import stat
import sys
from collections.abc import Callable

from . import defaults
from .capture import BlockSplitter
from .endpoints.base import SocketFile, remove_stale_socket
from .errors import RelayError, StartError
from .metrics import render_prometheus, stats_document
from .service import OneShotServer, RequestTooLong, read_until
from .stats import Snapshot

log = logging.getLogger("fastrelay")

__all__ = ["ControlServer", "capture_stream", "query"]

_COMMANDS = ("stats", "metrics", "capture LINK [PORT...]")

# capture(link, ports, conn): None when the capture took conn, else why not (one line).
CaptureStarter = Callable[[str, list[str], socket.socket], str | None]


class ControlServer:
    """Serves the control socket at path from snapshot() (the daemon's links).

    A OneShotServer, so `fastrelay stats` still gets an answer when the daemon is out
    of descriptors. A command line longer than CONTROL_LINE_MAX is answered with an error.
    """

    def __init__(self, path: str, snapshot: Snapshot, uptime: Callable[[], float],
                 capture: CaptureStarter | None = None) -> None:
        self.path = path
        self.snapshot = snapshot
        self.uptime = uptime
        self.capture = capture
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

    async def _serve(self, conn: socket.socket) -> bool:
        """Answer one command; True when a capture took the connection over."""
        try:
            line = await read_until(conn, (b"\n",), defaults.CONTROL_LINE_MAX)
        except RequestTooLong:
            answer = json.dumps({"error": f"command longer than "
                                          f"{defaults.CONTROL_LINE_MAX} bytes"}) + "\n"
        else:
            if line is None:
                return False  # the client left without a whole line
            command = line.decode("utf-8", "replace").strip()
            if command.split(maxsplit=1)[:1] == ["capture"]:
                error = self._capture(command, conn)
                if error is None:
                    return True
                answer = json.dumps({"error": error}) + "\n"
            else:
                answer = self._answer(command)
        await asyncio.get_running_loop().sock_sendall(conn, answer.encode())
        return False

    def _capture(self, command: str, conn: socket.socket) -> str | None:
        """`capture LINK [PORT...]`: hand conn to a capture; None if it took it."""
        try:
            words = shlex.split(command)
        except ValueError as exc:
            return f"capture: {exc}"
        if len(words) < 2:
            return "capture: which link? (capture LINK [PORT...])"
        if self.capture is None:
            return "capture: not served here"
        return self.capture(words[1], words[2:], conn)

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


def capture_stream(path: str, link: str, ports: list[str], out: str,
                   timeout: float = defaults.REQUEST_TIMEOUT) -> int:
    """`fastrelay capture`: ask the daemon at path for link's frames (of ports, or all) and
    copy the pcapng stream to the file out ("-": stdout), whole blocks only, until the
    daemon ends it (exit status 1) or out's reader goes away (0); KeyboardInterrupt (the
    caller's SIGINT, SIGTERM) ends it too. RelayError, one line, if it cannot start.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"capture " + shlex.join([link, *ports]).encode() + b"\n")
            first = sock.recv(1 << 16)
            if first.startswith(b"{"):
                while not first.endswith(b"\n"):
                    more = sock.recv(4096)
                    if not more:
                        break
                    first += more
        except OSError as exc:
            raise RelayError(f"cannot reach the daemon at {path}: {exc.strerror or exc} "
                             f"(is `fastrelay --config` running, with [daemon] control = "
                             f"{path!r}?)") from None
        if not first:
            raise RelayError(f"capture {link}: the daemon at {path} closed without an answer")
        if first.startswith(b"{"):
            try:
                error = json.loads(first)["error"]
            except (ValueError, KeyError, TypeError):
                error = first.decode("utf-8", "replace").strip()
            raise RelayError(f"capture: {error}")
        try:
            fd = 1 if out == "-" else os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                              | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RelayError(f"capture: cannot write {out}: {exc.strerror or exc}") from None
        sock.settimeout(None)
        blocks = BlockSplitter()  # only whole blocks are written: the file stays valid
        whole = 0  # bytes of whole blocks written: an interrupted write is cut back to it
        try:
            data = first
            while data:
                try:
                    chunk = blocks.feed_data(data)
                except ValueError as exc:
                    raise RelayError(f"capture: the daemon sent {exc}") from None
                view = memoryview(chunk)
                try:
                    while view:
                        view = view[os.write(fd, view):]
                except BrokenPipeError:
                    return 0  # the reader (Wireshark, say) went away: that ends a capture
                except OSError as exc:
                    raise RelayError(f"capture: cannot write {out}: "
                                     f"{exc.strerror or exc}") from None
                whole += len(chunk)
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""  # reset: the daemon is gone
        finally:
            if fd != 1:
                # Ctrl-C may have come between the parts of a write: a file ends with
                # whole blocks all the same.
                with contextlib.suppress(OSError):
                    if os.fstat(fd).st_size > whole and stat.S_ISREG(os.fstat(fd).st_mode):
                        os.ftruncate(fd, whole)
                os.close(fd)
        print(f"fastrelay: capture {link}: the daemon ended the stream (it stopped, or the "
              f"link was changed or removed)", file=sys.stderr)
        return 1
    finally:
        sock.close()

"""Stdio endpoint: netrelay's `-` target (raw frames on stdin and stdout)."""

from __future__ import annotations

import os

from .._core import StdioPort
from ..errors import StartError
from .base import Endpoint, adopt

__all__ = ["StdioEndpoint"]


class StdioEndpoint(Endpoint):
    """Reads frames from stdin and writes them to stdout, unframed, one write per frame.

    Works on copies of the descriptors (the port closes them) switched to non-blocking
    mode, so a stalled reader of stdout only fills this port's backlog. The flags are
    restored by close(): the descriptions are shared with the parent shell.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._saved: list[tuple[int, bool]] = []

    async def start(self) -> None:
        fds: list[int] = []
        try:
            for fd in (0, 1):
                self._saved.append((fd, os.get_blocking(fd)))
                fds.append(os.dup(fd))
                os.set_blocking(fds[-1], False)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise StartError("stdio", f"cannot use stdin and stdout: "
                                      f"{exc.strerror or exc}") from None
        port = adopt(fds, lambda: StdioPort(fds[0], "stdio", wfd=fds[1],
                                            **self.relay.options.port_kwargs))
        try:
            self.relay.attach(port, self)
        except StartError as exc:
            raise StartError("stdio", f"{exc.reason} (stdin must be a pipe, socket or "
                                      f"terminal, not a regular file or /dev/null)") from None

    def close(self) -> None:
        super().close()
        for fd, blocking in self._saved:
            try:
                os.set_blocking(fd, blocking)
            except OSError:
                pass
        self._saved = []

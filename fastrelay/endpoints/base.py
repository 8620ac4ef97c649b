"""Endpoint: the control-plane side of one target (opening, re-opening, closing its ports)."""

from __future__ import annotations

import abc
import logging
import os
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._core import Port
    from ..relay import Relay

log = logging.getLogger("fastrelay")

__all__ = ["Endpoint", "remove_stale_socket"]


def remove_stale_socket(path: str) -> None:
    """Remove a unix socket left at path by an earlier run (never a file of another kind;
    abstract names, starting with NUL, have nothing on disk)."""
    if path.startswith("\0"):
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
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

    def __str__(self) -> str:
        return str(self.target)

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the target and attach its port(s)."""

    def port_closed(self, port: Port, reason: str, fault: bool) -> None:
        """A port of ours was closed by the data plane (the relay has logged it)."""
        self.relay.endpoint_ended(self, reason)

    def close(self) -> None:
        """Release sockets, files and tasks (ports are closed by the relay's hub)."""
        self.closed = True

"""Tap and bridge endpoints: an existing tap (`tap:NAME`) or a new tap enslaved to a bridge."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import TYPE_CHECKING, Any

from .._core import TapPort
from ..doctor import warn_port
from ..tapdev import TapDevice, create_bridge_tap, open_tap
from ..targets import BridgeTarget, TapTarget
from .base import Endpoint, adopt, log

if TYPE_CHECKING:
    from ..relay import Relay

__all__ = ["BridgeEndpoint", "TapEndpoint", "offload_allowed"]


def offload_allowed(relay: Relay) -> bool:
    """Whether taps of this relay may take GSO super-frames and partial checksums.

    Only a tap can pass such a frame on (with its vnet header), so offloads are on only
    when every port the relay can ever have is a tap: point to point between two tap or
    bridge targets. Anywhere a plain peer may appear (a hub, a socket target), they stay
    off and the kernel segments and checksums before we read (see dataplane/tap.pyx).
    """
    if not relay.point_to_point:
        return False
    return all(isinstance(e, TapEndpoint) for e in relay.endpoints)


def _close_opened(opening: asyncio.Future[TapDevice]) -> None:
    """Close the tap a worker thread opened for a start that was cancelled meanwhile."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class TapEndpoint(Endpoint):
    """`tap:NAME[,queues=N][,offload=off]`: attach to an existing tap.

    A persistent tap made for a user (`ip tuntap add NAME mode tap user U`) is opened
    without any privilege. The tap outlives us; we only close our descriptors. A tap
    port ends when the device is removed; it does not come back.
    """

    target: TapTarget | BridgeTarget

    def __init__(self, target: TapTarget | BridgeTarget, relay: Relay) -> None:
        super().__init__(target, relay)
        self.device: TapDevice | None = None
        self.port: Any = None

    def _open(self, offload: bool) -> TapDevice:
        """Open the device this endpoint serves."""
        return open_tap(str(self), self.target.name, queues=self.target.queues,
                        offload=offload)

    def _port_name(self, dev: TapDevice) -> str:
        """What the port is called in log lines."""
        return f"tap {dev.name}"

    async def start(self) -> None:
        offload = self.target.offload and offload_allowed(self.relay)
        # pyroute2 runs an asyncio loop of its own inside its calls (and uvloop cannot
        # carry netlink sockets): the few set-up requests run in a worker thread.
        opening = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, self._open, offload))
        try:
            dev = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread cannot be stopped: whatever it opens is closed when it is done.
            opening.add_done_callback(_close_opened)
            raise
        kwargs = dict(self.relay.options.port_kwargs)
        fds, dev.fds = dev.fds, []  # from here the port owns the descriptors (see adopt)
        port = adopt(fds, lambda: TapPort(fds[0], self._port_name(dev), queues=fds[1:],
                                          offload=bool(dev.offload), **kwargs))
        self.device = dev
        self.port = port
        self.relay.attach(port, self)
        log.info("%s: %d queue(s), offloads %s", port.name, port.nqueues,
                 f"{dev.offload:#x}" if dev.offload else "off")
        # The host settings that would keep frames from crossing the bridge (or the tap's
        # MTU beyond --max-frame): warnings only, the port forwards meanwhile.
        await warn_port(dev.name, self.relay.options.max_frame)

    def port_closed(self, port: Any, reason: str, fault: bool) -> None:
        port.close_queues()
        super().port_closed(port, reason, fault)

    def close(self) -> None:
        super().close()
        if self.port is not None:
            self.port.close_queues()
        if self.device is not None:
            self.device.close()


class BridgeEndpoint(TapEndpoint):
    """`BRIDGE` (netrelay's form): a new tap with the bridge's MTU, up, enslaved to it.

    The tap is not persistent: it vanishes with our descriptors, at exit or on failure.
    Needs CAP_NET_ADMIN, as creating any interface does.
    """

    target: BridgeTarget

    def _open(self, offload: bool) -> TapDevice:
        return create_bridge_tap(str(self), self.target.name, queues=self.target.queues,
                                 offload=offload)

    def _port_name(self, dev: TapDevice) -> str:
        return f"bridge {self.target.name} ({dev.name})"

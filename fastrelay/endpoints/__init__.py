"""Endpoints: open the data-plane ports for each kind of target and supervise them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import TargetError
from ..targets import (BridgeTarget, StdioTarget, TapTarget, Target, TCPListenTarget,
                       TCPTarget, UDPTarget, UnixDgramTarget, UnixListenTarget, UnixTarget,
                       VxlanTarget)
from .base import Endpoint
from .dgram import DatagramEndpoint
from .stdio import StdioEndpoint
from .stream import StreamClientEndpoint, StreamListenerEndpoint
from .tap import BridgeEndpoint, TapEndpoint
from .vxlan import VxlanEndpoint

if TYPE_CHECKING:
    from ..relay import Relay

__all__ = ["Endpoint", "make_endpoint"]


def make_endpoint(target: Target, relay: Relay) -> Endpoint:
    """The endpoint that serves target (the one place that maps targets to endpoints)."""
    if isinstance(target, (UDPTarget, UnixDgramTarget)):
        return DatagramEndpoint(target, relay)
    if isinstance(target, (TCPTarget, UnixTarget)):
        return StreamClientEndpoint(target, relay)
    if isinstance(target, (TCPListenTarget, UnixListenTarget)):
        return StreamListenerEndpoint(target, relay)
    if isinstance(target, StdioTarget):
        return StdioEndpoint(target, relay)
    if isinstance(target, BridgeTarget):
        return BridgeEndpoint(target, relay)
    if isinstance(target, TapTarget):
        return TapEndpoint(target, relay)
    if isinstance(target, VxlanTarget):
        return VxlanEndpoint(target, relay)
    raise TargetError(str(target), "unknown target kind")

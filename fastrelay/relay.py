"""Relay: runs one hub and its endpoints on the event loop; owns the exit policy and reports."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import defaults
from ._core import FRAME_MAX_LEN, QUEUE_DEFAULT_BYTES, Hub, Port
from .endpoints import Endpoint, make_endpoint
from .errors import StartError
from .stats import Totals, format_totals
from .targets import Target

log = logging.getLogger("fastrelay")

__all__ = ["RelayOptions", "Relay"]


@dataclass
class RelayOptions:
    """Settings of one relay (a link or a hub)."""

    verbosity: int = 0
    reconnect: bool = False
    queue_bytes: int = QUEUE_DEFAULT_BYTES
    max_frame: int = FRAME_MAX_LEN
    bind: str | None = None          # local address for UDP targets and `-l PORT`
    connect_timeout: float = 5.0
    backoff: dict[str, float] = field(default_factory=dict)  # Backoff(**backoff)

    @property
    def port_kwargs(self) -> dict[str, int]:
        return {"queue_bytes": self.queue_bytes, "max_frame": self.max_frame}


class Relay:
    """A hub plus the endpoints feeding it.

    Point-to-point mode (netrelay `SRC DEST`) ends, with status 0, as soon as one side
    ends, unless reconnect is on; hub mode runs until stopped. Data-plane port closures
    arrive in `_port_closed`, are logged (faults as warnings, orderly ends at -vv) and
    passed to the endpoint that owns the port.
    """

    def __init__(self, targets: Sequence[Target], options: RelayOptions, *,
                 point_to_point: bool, name: str = "") -> None:
        self.options = options
        self.point_to_point = point_to_point
        self.name = name
        self.hub = Hub(on_close=self._port_closed)
        self.endpoints: list[Endpoint] = [make_endpoint(t, self) for t in targets]
        self._owners: dict[Port, Endpoint] = {}
        self._done: asyncio.Future[int] | None = None
        self.retired = Totals()  # counters of ports already closed

    # -- used by endpoints ------------------------------------------------------------

    def attach(self, port: Port, endpoint: Endpoint) -> None:
        """Join a freshly opened port to the hub on behalf of endpoint."""
        try:
            self.hub.add(port)
        except OSError as exc:
            raise StartError(port.name, f"cannot watch it: {exc.strerror or exc}") from None
        self._owners[port] = endpoint
        log.info("%s: attached", port.name)

    def endpoint_ended(self, endpoint: Endpoint, reason: str) -> None:
        """An endpoint will not come back: point-to-point ends with it."""
        if self.point_to_point:
            log.info("%s ended (%s): stopping", endpoint, reason)
            self.stop(0)

    # -- running ----------------------------------------------------------------------

    def _port_closed(self, port: Port, reason: str, fault: bool) -> None:
        self.retired.add(port)
        if fault:
            log.warning("%s: %s", port.name, reason)
        else:
            log.info("%s: %s", port.name, reason)
        endpoint = self._owners.pop(port, None)
        if endpoint is not None:
            endpoint.port_closed(port, reason, fault)

    def stop(self, status: int = 0) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(status)

    def totals(self) -> Totals:
        totals = Totals(self.retired)
        for port in self.hub.ports:
            totals.add(port)
        totals.ports = len(self.hub.ports)
        return totals

    async def start(self) -> None:
        """Watch the hub and start every endpoint; StartError if one cannot start."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        loop.add_reader(self.hub.fileno(), self.hub.poll)
        for endpoint in self.endpoints:
            await endpoint.start()

    async def wait(self) -> int:
        assert self._done is not None
        return await self._done

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.hub.fileno())
        for endpoint in self.endpoints:
            endpoint.close()
        self.hub.close()

    async def run(self, *, handle_signals: bool = True) -> int:
        """Start, run until the exit policy or a signal says so, clean up; exit status.

        handle_signals is False when the loop is not in the main thread (embedding, tests).
        """
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.stop, 0)
        reporter = None
        try:
            await self.start()
            if self.options.verbosity >= 1:
                reporter = loop.create_task(self._report())
            return await self.wait()
        finally:
            if reporter is not None:
                reporter.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
            self.close()

    async def _report(self) -> None:
        """-v: one line of live counters per interval, only when something moved."""
        last = None
        while True:
            await asyncio.sleep(defaults.STATS_INTERVAL)
            totals = self.totals()
            line = format_totals(totals, last, defaults.STATS_INTERVAL)
            if last is None or totals.as_tuple() != last.as_tuple():
                print(f"fastrelay: {line}", file=sys.stderr, flush=True)
            last = totals


def run(targets: Sequence[Target], options: RelayOptions, *, point_to_point: bool) -> int:
    """Run one relay to completion on uvloop."""
    import uvloop

    relay = Relay(targets, options, point_to_point=point_to_point)
    return uvloop.run(relay.run())



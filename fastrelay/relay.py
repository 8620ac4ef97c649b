"""Relay: runs one hub and its endpoints on the event loop; owns the exit policy and reports."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import defaults
from ._core import (FRAME_MAX_LEN, QUEUE_BUDGET_DEFAULT_BYTES, QUEUE_DEFAULT_BYTES, Hub, Port,
                    QueueBudget, Switch)
from .capture import CaptureOptions, CaptureSession, FileOutput
from .endpoints import Endpoint, make_endpoint
from .endpoints.vxlan import VxlanEndpoint
from .errors import StartError
from .ratelimit import RateLimitedLog
from .stats import SWITCH_COUNTERS, EndpointStats, SwitchStats, Totals, format_totals
from .stats_table import port_lines
from .targets import Target
from .tls import Network, TLSFiles

if TYPE_CHECKING:
    from ._core import SwitchEvent  # a type alias of the stub only

log = logging.getLogger("fastrelay")

__all__ = ["RelayOptions", "Relay", "LINK"]

# The link (daemon) a log line belongs to. Set in the task that runs a link; uvloop hands
# the context on to the tasks and reader callbacks created from there, so every line an
# endpoint or the hub logs carries its link without passing names around.
LINK: contextvars.ContextVar[str] = contextvars.ContextVar("fastrelay_link", default="")

# Names of closed ports a relay remembers for the switch's log lines (see Relay._gone).
_GONE_NAMES = 64


@dataclass
class RelayOptions:
    """Settings of one relay (a link or a hub)."""

    verbosity: int = 0
    reconnect: bool = False
    queue_bytes: int = QUEUE_DEFAULT_BYTES           # backlog bound of each port
    queue_total: int = QUEUE_BUDGET_DEFAULT_BYTES    # of all the relay's backlogs together
    max_frame: int = FRAME_MAX_LEN
    bind: str | None = None          # local address for UDP targets and `-l PORT`
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    max_clients: int = defaults.MAX_CLIENTS              # per listener
    max_clients_total: int = defaults.MAX_CLIENTS_TOTAL  # all listeners of the relay
    backoff: dict[str, float] = field(default_factory=dict)  # Backoff(**backoff)
    flush_timeout: float = defaults.STOP_FLUSH_TIMEOUT      # drain deadline when stopping
    tls: TLSFiles = field(default_factory=TLSFiles)  # certificate, key, CA of `,tls` targets
    tls_name: str | None = None      # name a TLS client checks instead of its target's host
    tls_timeout: float = defaults.TLS_HANDSHAKE_TIMEOUT
    allow: tuple[Network, ...] = ()  # TCP listeners accept only these sources (empty: any)
    switch: bool = False             # a learning switch; False: a hub (floods every frame)
    mac_age: float = defaults.MAC_AGE                # seconds an unseen MAC is remembered
    mac_table_size: int = defaults.MAC_TABLE_SIZE    # MAC table entries; learning stops there
    loop_threshold: int = defaults.LOOP_THRESHOLD    # MAC moves per second that mean a loop
    loop_hold: float = defaults.LOOP_HOLD            # seconds a port stays blocked after one
    batch_wait_us: int = defaults.BATCH_WAIT_US      # Hub.batch_wait (0: off)
    capture: CaptureOptions | None = None    # --pcap: run() writes every frame to a file

    @property
    def port_kwargs(self) -> dict[str, Any]:
        return {"queue_bytes": self.queue_bytes, "max_frame": self.max_frame}


class _Tally:
    """What a relay counts for one endpoint beyond its open ports' own counters."""

    def __init__(self) -> None:
        self.retired = Totals()   # counters of the endpoint's ports already closed
        self.connections = 0
        self.disconnects = 0
        self.lost_bytes = 0
        self.switching = dict.fromkeys(SWITCH_COUNTERS, 0)  # of the ports already closed


class Relay:
    """A hub plus the endpoints feeding it.

    Point-to-point mode (netrelay `SRC DEST`) ends, with status 0, as soon as one side
    ends, unless reconnect is on; hub mode runs until stopped. Data-plane port closures
    arrive in `_port_closed`, are logged (faults as warnings, orderly ends at -vv) and
    passed to the endpoint that owns the port. Stopping drains the ports' queues for up
    to `flush_timeout`, then closes every endpoint (sockets, taps) and the hub.

    The hub forwards through a Switch: in switch mode (options.switch, hubs only) known
    unicast goes to one port; otherwise every frame floods and the switch only learns.
    Either way its events (a loop, a duplicate MAC, a port unblocked) become one log
    line each, naming the ports, and its housekeeping runs once a second (`_on_tick`).
    """

    def __init__(self, targets: Sequence[Target], options: RelayOptions, *,
                 point_to_point: bool, name: str = "",
                 labels: Sequence[str] | None = None, budget: QueueBudget | None = None) -> None:
        self.options = options
        self.point_to_point = point_to_point
        self.name = name
        # What every backlog of the relay may hold together (the daemon hands in one per
        # link, kept across the link's restarts); options.queue_total when not given.
        self.budget = budget if budget is not None else QueueBudget(options.queue_total)
        # Point to point is a hub of two ports: it floods, and learns only to report.
        self.switch = Switch(forwarding=options.switch and not point_to_point,
                             capacity=options.mac_table_size, mac_age=options.mac_age,
                             move_threshold=options.loop_threshold, hold=options.loop_hold)
        self.hub = Hub(on_close=self._port_closed, budget=self.budget, switch=self.switch,
                       on_event=self._switch_events)
        self.hub.batch_wait = options.batch_wait_us / 1e6
        self.endpoints: list[Endpoint] = [make_endpoint(t, self) for t in targets]
        self.labels = list(labels) if labels is not None else [str(t) for t in targets]
        self._owners: dict[Port, Endpoint] = {}
        self._tally: dict[Endpoint, _Tally] = {e: _Tally() for e in self.endpoints}
        self._done: asyncio.Future[int] | None = None
        self._watching = False
        self._closed = False
        self.retired = Totals()  # counters of ports already closed
        self.clients = 0         # accepted clients of all listeners (max_clients_total)
        self.captures: list[CaptureSession] = []  # bound to this relay's ports (capture.py)
        # For the log lines a peer can trigger at will: closes, accept errors, refusals.
        self.log_limit = RateLimitedLog(log)
        # Clients refused by the allowlist: one line per source and interval.
        self.allow_log = RateLimitedLog(log, burst=1)
        self._tick: asyncio.TimerHandle | None = None
        # Names of the ports closed last (by switch port id): a switch event may name a
        # port that closed in the same poll, before the event was handed over.
        self._gone: dict[int, str] = {}

    # -- used by endpoints ------------------------------------------------------------

    def attach(self, port: Port, endpoint: Endpoint) -> None:
        """Join a freshly opened port to the hub on behalf of endpoint."""
        try:
            self.hub.add(port, trunk=endpoint.trunk)
        except OSError as exc:
            raise StartError(port.name, f"cannot watch it: {exc.strerror or exc}") from None
        except ValueError as exc:
            # The switch has no free slot (SWITCH_PORTS_MAX ports attached).
            raise StartError(port.name, str(exc)) from None
        self._owners[port] = endpoint
        self._tally[endpoint].connections += 1
        self.log_limit.log(logging.INFO, ("attached", endpoint), "%s: attached", port.name)
        for session in self.captures:
            session.port_attached(port, self.label_of(port))

    def label_of(self, port: Port) -> str | None:
        """The label (target as written) of the endpoint that owns port."""
        endpoint = self._owners.get(port)
        return self.labels[self.endpoints.index(endpoint)] if endpoint is not None else None

    def endpoint_ended(self, endpoint: Endpoint, reason: str) -> None:
        """An endpoint will not come back: point-to-point ends with it."""
        if self.point_to_point:
            log.info("%s ended (%s): stopping", endpoint, reason)
            self.stop(0)

    # -- running ----------------------------------------------------------------------

    def _port_closed(self, port: Port, reason: str, fault: bool) -> None:
        self.retired.add(port)
        for session in self.captures:
            session.port_closed(port)
        # The backlog outlives the port's descriptor: what is left in it was never sent.
        lost = port.queued_bytes
        endpoint = self._owners.pop(port, None)
        # The switch forgets the port once this returns: its final decisions, now.
        switching = self.switch.port_stats(port.switch_id)
        self._gone[port.switch_id] = port.name
        if len(self._gone) > _GONE_NAMES:
            del self._gone[next(iter(self._gone))]
        # Peers close (and send bad frames) as often as they like: rate-limited lines.
        if fault:
            self.log_limit.log(logging.WARNING, ("fault", endpoint), "%s: %s%s", port.name,
                               reason, f" ({lost} queued bytes lost)" if lost else "")
        else:
            self.log_limit.log(logging.INFO, ("closed", endpoint), "%s: %s", port.name, reason)
        if endpoint is not None:
            tally = self._tally[endpoint]
            tally.retired.add(port)
            tally.disconnects += 1
            tally.lost_bytes += lost
            for name, value in switching.items():
                tally.switching[name] += value
            endpoint.port_closed(port, reason, fault)

    def _port_name(self, switch_id: int) -> str:
        """The name of the port with this switch port id (open, or closed a moment ago)."""
        for port in self._owners:
            if port.switch_id == switch_id:
                return port.name
        return self._gone.get(switch_id, f"a port that left (#{switch_id})")

    def _switch_events(self, events: list[SwitchEvent]) -> None:
        """The switch's events since the last poll: one log line each, rate-limited (a
        storm through many MACs would otherwise be as many lines)."""
        for kind, mac, vlan, before, after in events:
            where = f"{mac} ({f'VLAN {vlan}' if vlan else 'untagged'})"
            if kind == "unblocked":
                self.log_limit.log(logging.WARNING, ("unblocked", after),
                                   "%s: forwarding again after a suspected loop",
                                   self._port_name(after))
                continue
            a, b = self._port_name(before), self._port_name(after)
            pair = (kind, min(before, after), max(before, after))
            if kind == "duplicate":
                self.log_limit.log(logging.WARNING, pair, "duplicate MAC %s: seen on %s and %s "
                                   "(two guests started with the same mac=?)", where, a, b)
            elif self.switch.forwarding:
                self.log_limit.log(logging.WARNING, pair, "loop suspected: %s moved between %s "
                                   "and %s more than %d times in 1 s; not forwarding to/from "
                                   "%s for %g s", where, a, b, self.options.loop_threshold, b,
                                   self.options.loop_hold)
            else:
                self.log_limit.log(logging.WARNING, pair, "loop suspected: %s moved between %s "
                                   "and %s more than %d times in 1 s; a hub forwards on "
                                   "(a switch would block %s)", where, a, b,
                                   self.options.loop_threshold, b)

    def _on_tick(self) -> None:
        """Once a second: the switch's housekeeping (holds that ended, expired MACs)."""
        self._tick = asyncio.get_running_loop().call_later(defaults.SWITCH_TICK_INTERVAL,
                                                           self._on_tick)
        self.hub.tick()

    # -- captures -----------------------------------------------------------------------

    def add_capture(self, session: CaptureSession) -> None:
        """Capture this relay's ports into session (capture.py) until removed or closed."""
        # Replaced, never changed in place: a session may end (and be removed) while a
        # loop over the list calls it.
        self.captures = self.captures + [session]
        session.bind(self)
        self._watch_hub()

    def remove_capture(self, session: CaptureSession) -> None:
        if session in self.captures:
            self.captures = [s for s in self.captures if s is not session]
            session.unbind()
            self._watch_hub()

    def _poll_and_capture(self) -> None:
        """The hub's reader while capturing: after the poll, captures write out a full
        enough buffer (Python once per poll, not per frame)."""
        self.hub.poll()
        for session in self.captures:
            session.after_poll()

    def _watch_hub(self) -> None:
        """Watch the hub's epoll descriptor with the reader that fits (no capture: poll)."""
        if self._watching:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.hub.fileno())
            loop.add_reader(self.hub.fileno(),
                            self._poll_and_capture if self.captures else self.hub.poll)

    def stop(self, status: int = 0) -> None:
        """Make wait() return status (the caller then drains and closes)."""
        if self._done is not None and not self._done.done():
            self._done.set_result(status)

    def totals(self) -> Totals:
        totals = Totals(self.retired)
        for port in self.hub.ports:
            totals.add(port)
        totals.ports = len(self.hub.ports)
        return totals

    @property
    def batch_waits(self) -> int:
        """Batch waits the hub has taken (see Hub.poll)."""
        return self.hub.waits

    def endpoint_stats(self) -> list[EndpointStats]:
        """Counters of each endpoint, in target order: closed ports plus open ones."""
        out = []
        for endpoint, label in zip(self.endpoints, self.labels):
            tally = self._tally[endpoint]
            totals = Totals(tally.retired)
            switching = dict(tally.switching)
            stats = EndpointStats(label, str(endpoint), counters=totals.values,
                                  connections=tally.connections,
                                  disconnects=tally.disconnects,
                                  reconnects=endpoint.reconnects, refused=endpoint.refused,
                                  lost_bytes=tally.lost_bytes,
                                  refused_allow=endpoint.refused_allow,
                                  tls=bool(getattr(endpoint.target, "tls", False)),
                                  handshakes=endpoint.handshakes,
                                  handshake_failures=dict(endpoint.handshake_failures),
                                  vxlan=(endpoint.counters()
                                         if isinstance(endpoint, VxlanEndpoint) else None))
            for port, owner in self._owners.items():
                if owner is endpoint:
                    totals.add(port)
                    stats.connected += 1
                    stats.queued_bytes += port.queued_bytes
                    decided = self.switch.port_stats(port.switch_id)
                    for name, value in decided.items():
                        switching[name] += value
                    stats.ports.append({"name": port.name, **port.stats(), **decided,
                                        "trunk": port.trunk,
                                        "blocked": self.switch.is_blocked(port.switch_id)})
            stats.counters.update(switching)
            out.append(stats)
        return out

    def switch_stats(self, table: bool = False) -> SwitchStats:
        """The switch's mode and counters; its MAC table too when table is set (at most
        STATS_MAC_TABLE_ROWS rows, by VLAN and MAC; the rest are counted)."""
        stats = SwitchStats(self.switch.mode, self.options.mac_age, self.switch.stats())
        if table:
            entries = sorted(self.switch.entries(time.monotonic_ns(), with_remote=True),
                             key=lambda entry: (entry[1], entry[0]))
            shown = entries[:defaults.STATS_MAC_TABLE_ROWS]
            ports = {port.switch_id: (port.name, self._owners[port]) for port in self._owners}
            labels = dict(zip(self.endpoints, self.labels))
            rows = []
            for mac, vlan, switch_id, age, remote in shown:
                name, endpoint = ports.get(switch_id, (self._port_name(switch_id), None))
                label = labels.get(endpoint) if endpoint is not None else None
                row = {"mac": mac, "vlan": vlan, "port": name, "endpoint": label,
                       "age": round(age, 1)}
                if isinstance(endpoint, VxlanEndpoint) and remote >= 0:
                    row["remote"] = endpoint.remote_name(remote)  # the VTEP it is behind
                rows.append(row)
            stats.table = rows
            stats.omitted = len(entries) - len(shown)
        return stats

    def queued_bytes(self) -> int:
        """Bytes waiting in the ports' backlogs."""
        return sum(port.queued_bytes for port in self.hub.ports)

    async def start(self) -> None:
        """Watch the hub and start every endpoint; StartError if one cannot start."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._watching = True
        loop.add_reader(self.hub.fileno(),
                        self._poll_and_capture if self.captures else self.hub.poll)
        self._tick = loop.call_later(defaults.SWITCH_TICK_INTERVAL, self._on_tick)
        for endpoint in self.endpoints:
            try:
                await endpoint.start()
            except OSError as exc:
                # Out of descriptors or memory, say: a reason to retry, never a crash.
                raise StartError(str(endpoint), exc.strerror or str(exc)) from None

    async def wait(self) -> int:
        assert self._done is not None
        return await self._done

    async def drain(self, timeout: float) -> bool:
        """Stop reading, then let the hub run until every queue is empty or timeout passes;
        True if drained. (Without the stop, a peer that keeps sending would hold the
        queues up until the deadline.)"""
        if not self._watching:
            return True
        self.hub.stop_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.queued_bytes():
            if loop.time() >= deadline:
                log.warning("stopping with %d queued bytes unsent after %.1fs",
                            self.queued_bytes(), timeout)
                return False
            await asyncio.sleep(0.01)
        return True

    def close(self) -> None:
        """Close every endpoint (sockets, taps it created) and the hub; safe to repeat."""
        if self._closed:
            return
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._watching:
            asyncio.get_running_loop().remove_reader(self.hub.fileno())
            self._watching = False
        for session in self.captures:
            session.unbind()  # the session outlives the relay (a daemon link's restarts)
        self.captures = []
        for endpoint in self.endpoints:
            try:
                endpoint.close()
            except Exception:
                # One endpoint failing to clean up must not leave the others open.
                log.exception("%s: error while closing", endpoint)
        self.hub.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Graceful stop: drain the queues (up to timeout), then close everything."""
        try:
            await self.drain(self.options.flush_timeout if timeout is None else timeout)
        finally:
            self.close()

    async def run(self, *, handle_signals: bool = True) -> int:
        """Start, run until the exit policy or a signal says so, clean up; exit status.

        handle_signals is False when the loop is not in the main thread (embedding, tests).
        """
        loop = asyncio.get_running_loop()
        capture = self._open_capture()  # first: a file that cannot be written is one line
        signals: tuple[signal.Signals, ...] = ((signal.SIGINT, signal.SIGTERM) if handle_signals
                                               else ())
        for sig in signals:
            loop.add_signal_handler(sig, self.stop, 0)
        if capture is not None and handle_signals:
            loop.add_signal_handler(signal.SIGHUP, capture.reopen)
            signals += (signal.SIGHUP,)
        reporter = None
        started = False
        try:
            await self.start()
            started = True
            if self.options.verbosity >= 1:
                reporter = loop.create_task(self.report(self._print))
            return await self.wait()
        finally:
            if reporter is not None:
                reporter.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
            if started:
                await self.shutdown()
            else:
                self.close()
            if capture is not None:
                await capture.finish()  # after the drain: what was sent meanwhile is in
                capture.close()

    def _open_capture(self) -> CaptureSession | None:
        """--pcap: open the file and capture every port into it; StartError if it cannot."""
        options = self.options.capture
        if options is None:
            return None
        output = FileOutput(options.path, size=options.size, count=options.count)
        session = CaptureSession(output, link=self.name, snaplen=options.snaplen,
                                 on_end=self.remove_capture)
        try:
            session.start(strict=True)
        except OSError as exc:
            raise StartError(output.what, f"cannot open: {exc.strerror or exc}") from None
        self.add_capture(session)
        return session

    @staticmethod
    def _print(line: str) -> None:
        print(f"fastrelay: {line}", file=sys.stderr, flush=True)

    async def report(self, emit: Callable[[str], None]) -> None:
        """-v: one line of live counters per interval, only when something moved; a hub
        adds a line per port (the lossiest and busiest first), to show who loses frames."""
        last = None
        ports_before: dict[str, dict[str, int]] | None = None
        while True:
            await asyncio.sleep(defaults.STATS_INTERVAL)
            totals = self.totals()
            ports = [(port.name, port.stats()) for port in self.hub.ports]
            line = format_totals(totals, last, defaults.STATS_INTERVAL)
            if last is None or totals.as_tuple() != last.as_tuple():
                emit(line)
                if not self.point_to_point:
                    for text in port_lines(ports, ports_before, defaults.STATS_INTERVAL):
                        emit(text)
            last, ports_before = totals, dict(ports)


def run(targets: Sequence[Target], options: RelayOptions, *, point_to_point: bool) -> int:
    """Run one relay to completion on uvloop."""
    import uvloop

    relay = Relay(targets, options, point_to_point=point_to_point)
    return uvloop.run(relay.run())

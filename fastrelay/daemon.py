"""Daemon: runs every link and hub of a config file in one uvloop process, supervised, reloadable.

Theory of operation. Each link or hub of the config gets a `LinkRunner`: a task that
builds the link's `Relay` (one hub and its endpoints), starts it, and starts it again with
back-off when it cannot start (a port in use) or when it ends (a point-to-point side that
does not reconnect). Inside a running relay the endpoints do their own supervision: TCP
clients reconnect with capped, jittered exponential back-off, listeners keep accepting.
A link's failures stay in its runner: nothing a link does stops another.

Signals: SIGTERM and SIGINT stop every link gracefully (each drains its queues up to
`stop_timeout`, then closes its sockets and the taps it created) and exit 0. SIGHUP reads
the file again: a link whose definition (endpoints and resolved options) is unchanged is
left alone, its sockets untouched (its capture file, `pcap`, is reopened, or started,
changed or stopped as the file now says); changed and removed links are stopped first (so
a changed link may reuse its own ports), then changed and added links start. A file that
no longer validates is refused with one log line per problem, and the running links go on.

Captures (capture.py) belong to a link's runner, not to one run of its relay: the file of
`pcap` and the live captures of `fastrelay capture` (served through the control socket)
go on across the link's restarts, and end when the link is stopped or removed.

Readiness, reloads and stopping are told to systemd by hand through $NOTIFY_SOCKET
(`sd_notify`), so the unit can be Type=notify without a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable
from typing import ClassVar

from . import defaults
from ._core import QueueBudget
from .backoff import Backoff
from .capture import CaptureOptions, CaptureSession, FileOutput, SocketOutput
from .config import Config, DaemonSettings, LinkSpec, load_config
from .control import ControlServer
from .errors import ConfigError, StartError, TargetError
from .metrics import MetricsServer
from .relay import LINK, Relay
from .stats import EndpointStats, LinkStats, SwitchStats
from .tls import TLSSetupError

log = logging.getLogger("fastrelay")

__all__ = ["Daemon", "LinkRunner", "run_daemon", "sd_notify", "setup_daemon_logging"]


# -- systemd ---------------------------------------------------------------------------------

def sd_notify(state: str) -> bool:
    """Send state ("READY=1", ...) to systemd's $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc.strerror or exc)
        return False
    return True


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _stderr_is_journal() -> bool:
    """True when stderr is systemd's journal stream (then lines carry <priority> prefixes)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class LogFormatter(logging.Formatter):
    """One line per event: 'fastrelay: link NAME: message', or '<prio>link NAME: message'.

    In the journal, the `<N>` prefix gives each line its syslog priority (journald strips
    it) and the journal supplies the time and the unit name itself.
    """

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
        logging.CRITICAL: 2}

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        link = LINK.get()
        text = (f"link {link}: " if link else "") + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.journal:
            prio = self._PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines())
        return "fastrelay: " + text


def setup_daemon_logging(verbosity: int) -> None:
    """Daemon logging on stderr: events at info (connections included), -vv adds debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(_stderr_is_journal()))
    logger = logging.getLogger("fastrelay")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)


# -- one link --------------------------------------------------------------------------------

class LinkRunner:
    """Keeps one link or hub up: (re)starts its Relay, stops it gracefully, keeps its counters.

    The counters of a run that ended are folded into `_earlier`, so what snapshot() reports
    only grows for the life of the runner (a changed definition gets a new runner).
    """

    def __init__(self, spec: LinkSpec, verbosity: int = 0) -> None:
        self.spec = spec
        self.verbosity = verbosity
        self.state = "starting"
        self.error: str | None = None
        self.restarts = 0
        self.relay: Relay | None = None
        # One backlog budget for the link, whichever of its runs holds the bytes.
        self.budget = QueueBudget(spec.options.queue_total)
        self._earlier = [EndpointStats(label, label) for label in spec.endpoints]
        options = spec.options
        mode = "switch" if options.mode == "switch" and not spec.point_to_point else "hub"
        self._earlier_switch = SwitchStats(mode, options.mac_age)  # its counters, likewise
        self._earlier_waits = 0  # batch waits of the runs that ended, likewise
        self._task: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._stopping = False
        # Captures of the link, bound to each run's relay in turn: the `pcap` file's and
        # the live ones; the counters of those that ended.
        self.captures: list[CaptureSession] = []
        self._file_capture: CaptureSession | None = None
        self._captures_ended = {"frames": 0, "dropped": 0}
        self._context = contextvars.copy_context()
        self._context.run(LINK.set, spec.name)

    def start(self) -> None:
        """Start supervising, in a context whose log lines name the link."""
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"link {self.spec.name}", context=self._context)
        if self.spec.capture is not None:
            self._context.run(self._start_file_capture, self.spec.capture)

    def _new_relay(self) -> Relay:
        spec = self.spec
        relay = Relay(spec.targets, spec.options.relay_options(self.verbosity),
                      point_to_point=spec.point_to_point, name=spec.name, labels=spec.endpoints,
                      budget=self.budget)
        for session in self.captures:
            relay.add_capture(session)
        return relay

    # -- captures ---------------------------------------------------------------------------

    def _add_capture(self, session: CaptureSession) -> None:
        self.captures.append(session)
        if self.relay is not None:
            self.relay.add_capture(session)
        session.start()  # a file that cannot be opened is logged; SIGHUP tries again

    def _start_file_capture(self, options: CaptureOptions) -> None:
        # Appended to, never truncated: a restarted daemon keeps what it captured before.
        output = FileOutput(options.path, size=options.size, count=options.count,
                            truncate=False)
        session = CaptureSession(output, link=self.spec.name, snaplen=options.snaplen,
                                 on_end=self._capture_ended)
        self._file_capture = session
        self._add_capture(session)

    def start_live_capture(self, ports: list[str], conn: socket.socket, what: str) -> None:
        """`fastrelay capture`: stream the link's frames (of ports, or all) to conn."""
        session = CaptureSession(SocketOutput(conn, what), link=self.spec.name, ports=ports,
                                 on_end=self._capture_ended)
        log_ports = ", ".join(ports) if ports else "every port"
        self._context.run(log.info, "%s: capturing %s", what, log_ports)
        self._context.run(self._add_capture, session)

    def unknown_ports(self, names: list[str]) -> list[str]:
        """The names that are neither an endpoint of the link nor one of its ports now."""
        known = set(self.spec.endpoints)
        if self.relay is not None:
            known.update(port.name for port in self.relay.hub.ports)
        return [name for name in names if name not in known]

    def port_names(self) -> list[str]:
        return [port.name for port in self.relay.hub.ports] if self.relay is not None else []

    def _capture_ended(self, session: CaptureSession) -> None:
        if session in self.captures:
            self.captures.remove(session)
        if session is self._file_capture:
            self._file_capture = None
        if self.relay is not None:
            self.relay.remove_capture(session)
        self._captures_ended["frames"] += session.frames
        self._captures_ended["dropped"] += session.dropped
        if isinstance(session.output, SocketOutput):
            self._context.run(log.info, "%s: ended: %d frames, %d dropped",
                              session.output.what, session.frames, session.dropped)

    def reload(self, spec: LinkSpec) -> None:
        """SIGHUP, the definition unchanged: reopen the capture file, or apply its change."""
        old, self.spec = self.spec.capture, spec
        session = self._file_capture
        if session is not None and spec.capture == old:
            self._context.run(session.reopen)
            return
        if session is not None:
            self._context.run(session.close)
        if spec.capture is not None:
            self._context.run(self._start_file_capture, spec.capture)

    async def _supervise(self) -> None:
        """Start the relay, wait for it to end, start it again; for as long as the link lives.

        Anything that goes wrong, a StartError or any other exception (out of descriptors,
        a bug), is one log line and a restart with back-off: a link never stays down in
        silence. Only a target this build cannot serve (TargetError) stops it for good.
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff(initial=defaults.LINK_RESTART_INITIAL,
                          maximum=defaults.LINK_RESTART_MAX)
        try:
            while not self._stopping:
                began = loop.time()
                try:
                    ended = await self._run_once()
                except TargetError as exc:
                    # A target this build cannot serve: retrying cannot help.
                    self.state, self.error = "failed", str(exc)
                    log.error("%s; the link stays down until its definition changes", exc)
                    self._retire()
                    return
                except Exception as exc:  # noqa: BLE001 (supervision: log and retry anything)
                    self.error = str(exc) if isinstance(exc, StartError) else (
                        f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                    self._retire()
                    delay = backoff.next_delay()
                    self.state = "restarting"
                    log.error("%s; starting the link again in %.1fs", self.error, delay)
                else:
                    if not ended:
                        return  # stop() drains and closes
                    self._retire()
                    if loop.time() - began >= defaults.LINK_STABLE_AFTER:
                        backoff.reset()
                    delay = backoff.next_delay()
                    self.state = "restarting"
                    log.warning("ended; starting it again in %.1fs", delay)
                await asyncio.sleep(delay)
                self.restarts += 1
        except asyncio.CancelledError:
            self._retire()
            raise

    async def _run_once(self) -> bool:
        """One run of the link: start its relay and wait until it ends. True if it ended by
        itself, False if stop() ended it."""
        relay = self.relay = self._new_relay()
        await relay.start()
        self.state, self.error = "up", None
        log.info("up: %s %s", self.spec.kind, " + ".join(self.spec.endpoints))
        if self.verbosity >= 1:
            self._reporter = asyncio.get_running_loop().create_task(
                relay.report(self._report_line))
        await relay.wait()
        return not self._stopping

    def reload_tls(self) -> None:
        """Read the link's certificate, key and CA again (SIGHUP): new connections use
        them, established ones keep their session. A file that fails keeps the old ones."""
        relay = self.relay
        if relay is None or not any(getattr(t, "tls", False) for t in self.spec.targets):
            return
        try:
            relay.options.tls.load()
        except TLSSetupError as exc:
            log.error("reload: %s; keeping the certificates loaded before", exc)
            return
        log.info("reload: certificates read again")

    @staticmethod
    def _report_line(line: str) -> None:
        log.info("%s", line)

    def _retire(self) -> None:
        """Fold the current relay's counters into _earlier and close it."""
        relay, self.relay = self.relay, None
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
        if relay is None:
            return
        for earlier, now in zip(self._earlier, relay.endpoint_stats()):
            now.lost_bytes += now.queued_bytes  # closing discards what is still queued
            earlier.name = now.name
            earlier.absorb(now)
        self._earlier_switch.absorb(relay.switch_stats())
        self._earlier_waits += relay.batch_waits
        relay.close()

    async def stop(self, timeout: float) -> None:
        """Stop for good: drain the relay's queues (up to timeout), then close everything."""
        self._stopping = True
        task, relay = self._task, self.relay
        if task is None:
            return
        try:
            if relay is not None and self.state == "up":
                relay.stop(0)
                await task
                try:
                    await relay.drain(timeout)
                finally:
                    self._retire()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            # What was sent while draining is in the files and streams, as far as the
            # readers take it within CAPTURE_FINISH_TIMEOUT.
            await asyncio.gather(*(session.finish() for session in self.captures))
            for session in list(self.captures):
                self._context.run(session.close)
        self.state = "stopped"

    def snapshot(self, tables: bool = False) -> LinkStats:
        """State and counters, this run plus the earlier ones; with tables, the MAC table."""
        up = self.relay is not None and self.state == "up"
        current = (self.relay.endpoint_stats() if self.relay is not None and up
                   else [EndpointStats(e.label, e.name) for e in self._earlier])
        for now, earlier in zip(current, self._earlier):
            now.absorb(earlier)
        earlier_switch = self._earlier_switch
        switch = (self.relay.switch_stats(tables) if self.relay is not None and up
                  else SwitchStats(earlier_switch.mode, earlier_switch.mac_age,
                                   {"entries": 0, "capacity": self.spec.options.mac_table_size},
                                   [] if tables else None))
        switch.absorb(earlier_switch)
        budget = self.budget
        capture = {"frames": self._captures_ended["frames"]
                   + sum(s.frames for s in self.captures),
                   "dropped": self._captures_ended["dropped"]
                   + sum(s.dropped for s in self.captures),
                   "sessions": [s.stats() for s in self.captures]}
        waits = self._earlier_waits + (self.relay.batch_waits if self.relay is not None and up
                                       else 0)
        return LinkStats(self.spec.name, self.spec.kind, self.state, self.restarts,
                         self.error, current,
                         {"limit": budget.limit, "used": budget.used, "peak": budget.peak,
                          "refused_frames": budget.refused}, switch, capture, waits)


# -- the process -----------------------------------------------------------------------------

class Daemon:
    """All links of a config, the metrics and control listeners, signals and sd_notify."""

    def __init__(self, config: Config, verbosity: int = 0) -> None:
        self.config = config
        self.verbosity = verbosity
        self.runners: dict[str, LinkRunner] = {}
        self.metrics: MetricsServer | None = None
        self.control: ControlServer | None = None
        self._services = DaemonSettings()
        self._stop: asyncio.Event | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._reloads: set[asyncio.Task[None]] = set()
        self._began = time.monotonic()
        self._live_captures = 0  # started so far: numbers them in log lines

    def snapshot(self, tables: bool = False) -> list[LinkStats]:
        """Every link's state and counters; with tables, each switch's MAC table too."""
        return [runner.snapshot(tables) for runner in self.runners.values()]

    def uptime(self) -> float:
        return time.monotonic() - self._began

    def start_capture(self, link: str, ports: list[str], conn: socket.socket) -> str | None:
        """The control socket's `capture LINK [PORT...]`: stream the frames of link (of the
        ports or endpoints named, or all) to conn, which the capture then owns, until the
        client leaves. Why not, as one line, if it cannot."""
        runner = self.runners.get(link)
        if runner is None:
            return f"no link or hub named {link!r} (there are: {_listing(self.runners)})"
        live = sum(isinstance(s.output, SocketOutput) for r in self.runners.values()
                   for s in r.captures)
        if live >= defaults.CAPTURE_CLIENTS_MAX:
            return (f"{live} live captures already (at most {defaults.CAPTURE_CLIENTS_MAX}); "
                    f"end one first")
        unknown = runner.unknown_ports(ports)
        if unknown:
            return (f"{runner.spec.kind} {link} has no port or endpoint {unknown[0]!r} "
                    f"(ports: {_listing(runner.port_names())}; "
                    f"endpoints: {_listing(runner.spec.endpoints)})")
        self._live_captures += 1
        runner.start_live_capture(ports, conn, f"capture client {self._live_captures}")
        return None

    def _status(self) -> str:
        up = sum(1 for r in self.runners.values() if r.state == "up")
        return f"{up} of {len(self.runners)} links and hubs up"

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or stop()); exit status 0 after a graceful stop."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        try:
            await self._apply_services(self.config.daemon, starting=True)
            await self._apply_links(self.config)
            log.info("running %d links and hubs from %s", len(self.runners), self.config.path)
            sd_notify(f"READY=1\nSTATUS={self._status()}")
            await self._stop.wait()
            return 0
        finally:
            sd_notify("STOPPING=1")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in list(self._reloads):
                task.cancel()
            timeout = self.config.daemon.stop_timeout
            await asyncio.gather(*(r.stop(timeout) for r in self.runners.values()))
            await self._close_services()
            log.info("stopped")

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _on_stop_signal(self, sig: int) -> None:
        log.info("%s: stopping", signal.Signals(sig).name)
        self.stop()

    def _on_reload_signal(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """Read the config again and apply the differences (SIGHUP).

        Whatever fails in between (one log line), RELOADING=1 is followed by READY=1:
        systemd would otherwise hold the unit in "reloading", and every later
        `systemctl reload` would wait in vain.
        """
        assert self._reload_lock is not None and self._stop is not None
        async with self._reload_lock:
            if self._stop.is_set():
                return
            sd_notify(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}")
            log.info("SIGHUP: reloading %s", self.config.path)
            try:
                new = load_config(self.config.path)
                await self._apply_services(new.daemon, starting=False)
                await self._apply_links(new)
                self.config = new
                log.info("reloaded: %s", self._status())
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload refused: %s", problem.text(exc.path))
                log.error("reload refused: still running the previous configuration")
            except Exception as exc:  # noqa: BLE001 (a reload must end READY whatever failed)
                log.error("reload failed: %s: %s; running links are kept as they are",
                          type(exc).__name__, exc)
            # Not in a finally: a reload cancelled by a stop ends with STOPPING=1 instead.
            sd_notify(f"READY=1\nSTATUS={self._status()}")

    async def _apply_links(self, new: Config) -> None:
        """Stop removed and changed links, then start changed and added ones."""
        timeout = self.config.daemon.stop_timeout
        going = [name for name, runner in self.runners.items()
                 if new.links.get(name) != runner.spec]
        for name in going:
            log.info("link %s: %s", name, "changed: restarting it" if name in new.links
                     else "removed: stopping it")
        await asyncio.gather(*(self.runners[name].stop(timeout) for name in going))
        for name in going:
            del self.runners[name]
        for runner in self.runners.values():
            runner.reload_tls()  # the same paths may hold new certificates
        for name, spec in new.links.items():
            if name not in self.runners:
                runner = LinkRunner(spec, self.verbosity)
                self.runners[name] = runner
                runner.start()
            elif spec is not self.runners[name].spec:
                self.runners[name].reload(spec)  # unchanged: only its capture may change

    async def _apply_services(self, settings: DaemonSettings, *, starting: bool) -> None:
        """Open, move or close the metrics and control listeners as settings say.

        At start a listener that cannot open is fatal (StartError); on reload it is
        logged and the previous listener, if any, is kept.
        """
        if settings.metrics != self._services.metrics:
            metrics = (MetricsServer(settings.metrics, self.snapshot, self.uptime)
                       if settings.metrics else None)
            try:
                if metrics is not None:
                    await metrics.start()
            except StartError as exc:
                if starting:
                    raise
                log.error("reload: %s; keeping the previous metrics listener", exc)
            else:
                if self.metrics is not None:
                    await self.metrics.close()
                self.metrics = metrics
                self._services = DaemonSettings(settings.metrics, self._services.control)
        if settings.control != self._services.control:
            if self.control is not None:
                await self.control.close()  # first: the new path may be the same file
                self.control = None
            control = (ControlServer(settings.control, self.snapshot, self.uptime,
                                     capture=self.start_capture)
                       if settings.control else None)
            try:
                if control is not None:
                    await control.start()
            except StartError as exc:
                if starting:
                    raise
                log.error("reload: %s", exc)
                control = None
            self.control = control
            self._services = DaemonSettings(self._services.metrics,
                                            settings.control if control else None)

    async def _close_services(self) -> None:
        for server in (self.metrics, self.control):
            if server is not None:
                await server.close()
        self.metrics = self.control = None


def _listing(names: Iterable[str], most: int = 8) -> str:
    """Names for an error line: quoted, comma-separated, at most `most` of them."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:most]) or "none"
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def run_daemon(config: Config, verbosity: int = 0) -> int:
    """Run the daemon for config on uvloop until it is stopped; the exit status."""
    import uvloop

    return uvloop.run(Daemon(config, verbosity).run())

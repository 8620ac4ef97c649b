"""Runs scenario points: starts the relay and the C endpoints in order, measures, always cleans up."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .procs import BenchError, PortPool, Proc, tcp_listening, udp_bound, unix_listening, wait_until
from .scenarios import REPO, Scenario, Topology, relay_argv

CONNECT_TIMEOUT = 15.0   # for a peer to listen/connect, and for a relay to come up


@dataclass
class Options:
    """How to measure; filled from the command line."""

    sizes: list[int]
    seconds: float = 2.0            # sending time per throughput point
    latency_seconds: float = 1.0    # ping-pong time per latency point
    latency: bool = True
    pacing: str = "bulk"
    rate: float = 0.0               # sender frames/s cap, 0 for flat out
    pin: bool = False               # relay on RELAY_CPU, endpoints on TOOL_CPU
    relay_cpu: int = 1
    tool_cpu: int = 0
    settle: float = 0.2             # after all connected: let a relay register its clients
    idle: float = 0.5               # sink stops this long after the last frame
    verbose: bool = False
    fastrelay_cmd: list[str] | None = None  # instead of `python -m fastrelay`


@dataclass
class Row:
    """One point of the table: a scenario at one frame size."""

    scenario: str
    relay: str
    shape: str
    size: int
    nsinks: int
    sent: int = 0
    delivered: list[int] = field(default_factory=list)
    unicast: bool = False                # each sender's frames count at one sink only
    foreign: int = 0                     # frames ends read that were addressed to others
    fps_per_sink: float | None = None    # mean over sinks of each sink's own rate
    fps_total: float | None = None       # sum over sinks: what the relay delivered
    gbit_per_sink: float | None = None
    loss_pct: float | None = None        # 1 - delivered / (sent * sinks)
    corrupt: int = 0
    out_of_order: int = 0
    bunched: int = 0                     # paced sends (-r) that left right after the one
                                         # before: the sender fell behind (loadgen)
    relay_cpu_s: float | None = None
    relay_cpu_pct: float | None = None      # relay CPU over the sinks' busy time
    relay_ns_per_frame: float | None = None  # relay CPU / frames it took in
    p50_us: float | None = None
    p99_us: float | None = None
    ping_lost: int | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None


def _ready_when_listening(spec: str) -> Callable[[], bool]:
    """A check that is true once the listener named by @spec accepts connections."""
    if spec.startswith("tcp-listen:"):
        return partial(tcp_listening, int(spec.rsplit(":", 1)[1]))
    return partial(unix_listening, spec.split(":", 1)[1])


def _is_listener(spec: str) -> bool:
    """Whether @spec waits for the other side to connect."""
    return spec.startswith(("tcp-listen:", "unix-listen:"))


class Runner:
    """Measures scenario points with the compiled bench programs in @bins."""

    def __init__(self, bins: dict[str, Path], opts: Options) -> None:
        self.bins = bins
        self.opts = opts
        self.ports = PortPool()

    # -- one measurement -------------------------------------------------

    def _measure(self, sc: Scenario, topo: Topology, size: int, latency: bool,
                 work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                      list[dict[str, Any]], float | None, float]:
        """Start everything in a safe order, send, collect.

        Return (senders, sinks, idle ends, relay CPU s, wall s): the programs' results.
        """
        o = self.opts
        tool_cpu = o.tool_cpu if o.pin else None
        duration = o.latency_seconds if latency else o.seconds
        procs: list[Proc] = []
        ready: list[Path] = []
        # Receiving ends: the measured sinks, then the idle ends (the same program).
        ends = topo.sinks + topo.idle
        sinks: list[Proc | None] = [None] * len(ends)
        gens: list[Proc | None] = [None] * len(topo.senders)
        relay: Proc | None = None
        relay2: Proc | None = None   # the far switch of a link scenario

        def start(name: str, argv: list[str], cpu: int | None, cwd: str | None = None) -> Proc:
            p = Proc(name, argv, work, cpu=cpu, cwd=cwd)
            procs.append(p)
            if o.verbose:
                print(f"  $ {' '.join(p.argv)}", file=sys.stderr)
            return p

        def start_sink(i: int) -> None:
            flag = work / f"sink{i}.ready"
            ready.append(flag)
            if latency:
                argv = [str(self.bins["pingpong"]), "reflect", "-t", f"{duration + 60:g}",
                        "-I", "10", "-R", str(flag), "-T", f"{CONNECT_TIMEOUT:g}", topo.sinks[i]]
            else:
                argv = [str(self.bins["sink"]), "-t", f"{duration + 60:g}", "-I", f"{o.idle:g}",
                        "-R", str(flag), "-T", f"{CONNECT_TIMEOUT:g}", *topo.sink_args(i),
                        ends[i]]
            sinks[i] = start(f"sink{i}" if i < len(topo.sinks) else f"idle{i - len(topo.sinks)}",
                             argv, tool_cpu)

        def start_gen(k: int) -> None:
            name = f"gen{k}" if k else "gen"
            flag = work / f"{name}.ready"
            ready.append(flag)
            spec = topo.senders[k]
            if latency:
                argv = [str(self.bins["pingpong"]), "client", "-g", "-t", f"{duration:g}",
                        "-s", str(size), "-R", str(flag), "-T", f"{CONNECT_TIMEOUT:g}", spec]
            else:
                argv = [str(self.bins["loadgen"]), "-g", "-t", f"{duration:g}", "-s", str(size),
                        "-p", o.pacing, "-R", str(flag), "-T", f"{CONNECT_TIMEOUT:g}",
                        *topo.sender_args(k)]
                if o.rate:
                    argv += ["-r", f"{o.rate:g}"]
                argv.append(spec)
            gens[k] = start(name, argv, tool_cpu)

        try:
            # 1. Ends that listen must be listening before the relay connects to them.
            for i, spec in enumerate(ends):
                if _is_listener(spec):
                    start_sink(i)
                    wait_until(f"{spec} to listen", _ready_when_listening(spec),
                               CONNECT_TIMEOUT, procs)
            for k, spec in enumerate(topo.senders):
                if _is_listener(spec):
                    start_gen(k)
                    wait_until(f"{spec} to listen", _ready_when_listening(spec),
                               CONNECT_TIMEOUT, procs)
            # 2. The relay; ready when its listeners and UDP ports are there (read from /proc).
            if topo.relay_args is not None:
                command = relay_argv(sc.relay, self.bins["naive"], duration + 120,
                                     o.fastrelay_cmd)
                if topo.relay2_args is not None:
                    relay2 = start("relay2", command + topo.relay2_args,
                                   o.relay_cpu if o.pin else None, cwd=str(REPO))
                relay = start("relay", command + topo.relay_args, o.relay_cpu if o.pin else None,
                              cwd=str(REPO))
                for port in topo.relay_tcp:
                    wait_until(f"relay to listen on tcp {port}", partial(tcp_listening, port),
                               CONNECT_TIMEOUT, procs)
                for port in topo.relay_udp:
                    wait_until(f"relay to bind udp {port}", partial(udp_bound, port),
                               CONNECT_TIMEOUT, procs)
            # 3. Ends that connect (or just bind UDP); senders wait for "go" anyway. A
            # receiving end announces its MAC before it is ready, so a switch knows them all.
            for i in range(len(ends)):
                if sinks[i] is None:
                    start_sink(i)
            for k in range(len(gens)):
                if gens[k] is None:
                    start_gen(k)
            wait_until("every end to connect", lambda: all(f.exists() for f in ready),
                       CONNECT_TIMEOUT, procs)
            if relay is not None:
                # A connect() completes in the kernel before the relay has accept()ed
                # and joined the client to its hub; frames sent earlier could miss it.
                time.sleep(o.settle)
                for r in (relay, relay2):
                    if r is not None and not r.alive():
                        raise BenchError(f"{r.name} exited: {r.stderr_tail()}")

            # 4. Measure (the CPU of both relays, for a link between two).
            relays = [r for r in (relay, relay2) if r is not None]
            cpu0 = _cpu_sum(relays)
            t0 = time.monotonic()
            started = [g for g in gens if g is not None]
            for g in started:
                g.go()
            for g in started:
                if not g.wait(max(0.1, t0 + duration + 20 - time.monotonic())):
                    raise BenchError(f"{g.name} did not finish: {g.stderr_tail()}")
            senders = [g.result() for g in started]
            measured = [s for s in sinks[:len(topo.sinks)] if s is not None]
            if latency:
                for s in measured:
                    s.stop()    # the reflector prints its count on SIGTERM
            else:
                # Sinks end o.idle after their last frame; this only has to cover
                # a relay still draining its backlog, then SIGTERM takes what came.
                # Idle ends are not waited for: a switch may send them nothing at all.
                deadline = time.monotonic() + o.idle + 5 + duration
                for s in measured:
                    s.wait(max(0.1, deadline - time.monotonic()))
            cpu1 = _cpu_sum(relays)
            wall = time.monotonic() - t0
            # A point-to-point relay may leave when a side closes (netrelay does);
            # a hub must outlive its clients.
            if relay is not None and topo.relay_tcp and not relay.alive():
                raise BenchError(f"relay exited during the run: {relay.stderr_tail()}")
            results = []
            for end in sinks:
                assert end is not None
                end.stop()
                results.append(end.result())
            cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
            n = len(topo.sinks)
            return senders, results[:n], results[n:], cpu, wall
        finally:
            # Endpoints first, then the relay: it must not see a storm of errors mid-run.
            for p in procs:
                if p is not relay and p is not relay2:
                    p.stop()
            for r in (relay, relay2):
                if r is not None:
                    r.stop()

    # -- a table row -----------------------------------------------------

    def run_point(self, sc: Scenario, size: int) -> Row:
        """Throughput (and latency where the wiring allows) of @sc at @size; errors go in the row."""
        row = Row(sc.name, sc.relay, sc.shape, size, sc.nsinks)
        try:
            with tempfile.TemporaryDirectory(prefix="fastrelay-bench-") as tmp:
                senders, sinks, idle, cpu, wall = self._measure(
                    sc, sc.make(self.ports, Path(tmp)), size, False, Path(tmp))
            row.unicast = sc.unicast
            self._fill_throughput(row, senders, sinks, idle, cpu, wall)
            if self.opts.latency and sc.latency_ok and row.error is None:
                with tempfile.TemporaryDirectory(prefix="fastrelay-bench-") as tmp:
                    (ping,), _, _, _, _ = self._measure(sc, sc.make(self.ports, Path(tmp)),
                                                        size, True, Path(tmp))
                row.p50_us = ping.get("p50_us")
                row.p99_us = ping.get("p99_us")
                row.ping_lost = ping.get("lost")
                if not ping.get("samples"):
                    row.error = (f"latency: {ping.get('sent')} pings in "
                                 f"{ping.get('seconds', 0):.2f}s, none past the warm-up")
        except BenchError as exc:
            row.error = str(exc)
        except OSError as exc:
            row.error = f"{type(exc).__name__}: {exc}"
        return row

    @staticmethod
    def _fill_throughput(row: Row, senders: list[dict[str, Any]], sinks: list[dict[str, Any]],
                         idle: list[dict[str, Any]], cpu: float | None, wall: float) -> None:
        """Turn the programs' JSON results into the row's numbers; flag what is wrong.

        Broadcast rows: every sink should get every frame. Unicast rows (row.unicast):
        each sink only its own sender's, so delivered and sent are both summed.
        """
        row.sent = sum(int(s.get("frames", 0)) for s in senders)
        row.bunched = sum(int(s.get("bunched", 0)) for s in senders)
        row.delivered = [int(s["frames"]) for s in sinks]
        row.foreign = sum(int(s.get("foreign", 0)) for s in sinks + idle)
        row.fps_per_sink = statistics.fmean(float(s["frames_per_s"]) for s in sinks)
        row.fps_total = sum(float(s["frames_per_s"]) for s in sinks)
        row.gbit_per_sink = statistics.fmean(float(s["gbit_per_s"]) for s in sinks)
        row.corrupt = sum(int(s["corrupt"]) for s in sinks)
        row.out_of_order = sum(int(s["out_of_order"]) for s in sinks)
        copies = 1 if row.unicast else len(sinks)
        if row.sent:
            row.loss_pct = max(0.0, 100.0 * (1 - sum(row.delivered) / (row.sent * copies)))
        if row.unicast:
            taken_in = sum(row.delivered)
        else:
            taken_in = max(row.delivered) if row.delivered else 0
        # The relay is busy while frames reach the sinks; the CPU snapshot window
        # also holds the start-up wait and the sinks' idle timeout, which would
        # make a saturated relay look half idle.
        busy = max((float(s["seconds"]) for s in sinks), default=0.0) or wall
        if cpu is not None:
            row.relay_cpu_s = cpu
            row.relay_cpu_pct = 100.0 * cpu / busy if busy > 0 else None
            row.relay_ns_per_frame = cpu * 1e9 / taken_in if taken_in else None
        errors = sum(int(s.get("errors", 0)) for s in senders)
        if errors:
            row.error = f"sender: {errors} send errors (path stalled or closed)"
        elif not row.sent:
            row.error = "sender sent nothing"
        elif not taken_in:
            row.error = "nothing delivered"
        elif row.corrupt:
            row.error = f"{row.corrupt} corrupt frames"


def _cpu_sum(relays: list[Proc]) -> float | None:
    """CPU seconds of every relay so far; None without relays (or when one is unreadable)."""
    seconds = [r.cpu_seconds() for r in relays]
    if not seconds or any(s is None for s in seconds):
        return None
    return sum(s for s in seconds if s is not None)


def add_ratios(rows: list[Row]) -> list[str]:
    """Within this run only: each row against naive, netrelay and direct at the same size,
    a switch-mode unicast row against the same shape as a hub ("hub"), a VXLAN link
    between two switches against the plain UDP link between them ("udp-link").

    fps_x_B = this row's per-sink frames/s over B's (higher is better);
    cpu_x_B = B's relay ns/frame over this row's (higher: this relay is cheaper).
    Return the baselines that appear, in column order.
    """
    by_key = {(r.relay, r.shape, r.size): r for r in rows if r.error is None and r.skipped is None}
    used: list[str] = []
    for r in rows:
        if r.error or r.skipped or r.relay == "direct" or not r.fps_per_sink:
            continue
        bases = {"naive": by_key.get(("naive", r.shape, r.size)),
                 "netrelay": by_key.get(("netrelay", r.shape, r.size)),
                 "direct": by_key.get(("direct", r.shape.split("-")[0]
                                       if r.shape != "mixed" else "udp", r.size))}
        if r.shape == "vxlan-link":
            # VXLAN between two switches is judged against the plain UDP trunk between them.
            bases = {"udp-link": by_key.get((r.relay, "udp-link", r.size))}
        if r.unicast:
            # A unicast row is compared with its twin in the other mode, not with a
            # broadcast row: a switch row over the same shape as a hub.
            bases = {"hub": by_key.get((r.relay, r.shape.replace("-switch-", "-hub-"), r.size))}
        for name, base in bases.items():
            if base is None or base is r or not base.fps_per_sink:
                continue
            r.ratios[f"fps_x_{name}"] = r.fps_per_sink / base.fps_per_sink
            if name != "direct" and base.relay_ns_per_frame and r.relay_ns_per_frame:
                r.ratios[f"cpu_x_{name}"] = base.relay_ns_per_frame / r.relay_ns_per_frame
            if name not in used:
                used.append(name)
    return [b for b in ("naive", "netrelay", "direct", "hub", "udp-link") if b in used]


def cpu_count() -> int:
    """CPUs this process may run on (what --pin can use)."""
    return len(os.sched_getaffinity(0))

"""Tap scenarios: tap -> relay -> tap frames/s against a plain C copy loop, and TCP through taps.

Everything happens in throwaway network namespaces made here with pyroute2 and removed
in a `finally`, so nothing touches the host's interfaces and traffic never leaves them:

- `tapcopy-tap-p2p`, `fastrelay-tap-p2p`: two persistent taps t0, t1 in one namespace.
  `tapcopy gen` sends SIZE-byte frames out of t0 through a packet socket (so t0's reader
  gets them), the relay copies t0 -> t1, and t1's rx counter says how many it wrote. The
  relay is `tapcopy copy t0 t1` (blocking read, write: the C baseline) or
  `fastrelay tap:t0 tap:t1`; the ratio of the two in the same run is the figure.
- `fastrelay-tap-tcp-offload`, `fastrelay-tap-tcp-plain`: two test hosts (namespaces with a
  veth into bridge brA / brB), `fastrelay brA brB` between the bridges, one iperf3 TCP
  stream from host A to host B; with offloads (super-frames pass tap to tap) and with
  `offload=off` on both bridges (the kernel segments to MTU frames before we read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import TASKSET, BenchError, Proc, wait_until
from .scenarios import REPO

FRAME_SCENARIOS = ("tapcopy-tap-p2p", "fastrelay-tap-p2p")
TCP_SCENARIOS = ("fastrelay-tap-tcp-offload", "fastrelay-tap-tcp-plain")
TAP_SCENARIOS = FRAME_SCENARIOS + TCP_SCENARIOS
A4, B4 = "192.0.2.1", "192.0.2.2"
IFF_LOWER_UP = 0x10000


@dataclass
class TapRow:
    """One measured point of a tap scenario."""

    scenario: str
    size: int
    fps: float | None = None          # frames/s delivered (frame scenarios)
    gbit: float | None = None         # Gbit/s delivered (sink bytes, or iperf3 goodput)
    sent: int = 0                     # frames offered (generator) or bytes (iperf3)
    delivered: int = 0                # in the measured window
    relay_cpu_pct: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def tap_missing_reason() -> str | None:
    """Why the tap scenarios cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and taps)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


class Namespaces:
    """Namespaces made for one point, removed by close() (the caller's `finally`)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, role: str) -> str:
        """A new namespace with loopback up."""
        from pyroute2 import IPRoute, netns

        name = f"frb{os.getpid()}{role}"
        netns.create(name)
        self.names.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def close(self) -> None:
        """Remove every namespace made (their interfaces go with them)."""
        from pyroute2 import netns

        for name in reversed(self.names):
            netns.remove(name)
        self.names = []


def _in_ns(ns: str, argv: list[str], cpu: int | None) -> list[str]:
    """argv run inside ns, pinned to cpu when given (taskset and ip both exec: same PID)."""
    pin = [TASKSET, "-c", str(cpu)] if cpu is not None and TASKSET else []
    return [*pin, "ip", "netns", "exec", ns, *argv]


def _lower_up(ns: str, names: list[str]) -> bool:
    """True when every tap in names has a reader attached (carrier on)."""
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        for name in names:
            links = ipr.link("get", ifname=name)
            if not links or not links[0]["flags"] & IFF_LOWER_UP:
                return False
    return True


class TapRunner:
    """Measures the tap scenarios; bins from bench.build, pinning as the main runner."""

    def __init__(self, bins: dict[str, Path], seconds: float, pin: bool, relay_cpu: int,
                 tool_cpu: int, fastrelay_cmd: list[str] | None, verbose: bool) -> None:
        self.bins = bins
        self.seconds = seconds
        self.relay_cpu = relay_cpu if pin else None
        self.tool_cpu = tool_cpu if pin else None
        self.fastrelay = fastrelay_cmd or [sys.executable, "-m", "fastrelay"]
        self.verbose = verbose

    def _start(self, procs: list[Proc], work: Path, name: str, argv: list[str]) -> Proc:
        if self.verbose:
            print(f"  $ {' '.join(argv)}", file=sys.stderr)
        proc = Proc(name, argv, work, cwd=str(REPO))
        procs.append(proc)
        return proc

    def run(self, scenario: str, size: int) -> TapRow:
        """One point; errors go into the row."""
        row = TapRow(scenario, size)
        nss = Namespaces()
        procs: list[Proc] = []
        try:
            with tempfile.TemporaryDirectory(prefix="fastrelay-bench-tap-") as tmp:
                try:
                    if scenario in FRAME_SCENARIOS:
                        self._frames(row, nss, procs, Path(tmp))
                    else:
                        self._tcp(row, nss, procs, Path(tmp))
                finally:
                    for p in reversed(procs):
                        p.stop()
        except (BenchError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
            row.error = f"{type(exc).__name__}: {exc}"
        finally:
            nss.close()
        return row

    def _frames(self, row: TapRow, nss: Namespaces, procs: list[Proc], work: Path) -> None:
        """tap -> relay -> tap at row.size: frames/s at the sink."""
        from pyroute2 import IPRoute

        ns = nss.add("f")
        with IPRoute(netns=ns) as ipr:
            for name in ("t0", "t1"):
                ipr.link("add", ifname=name, kind="tuntap", mode="tap")
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up",
                         mtu=max(1500, row.size))
        tool = str(self.bins["tapcopy"])
        if row.scenario.startswith("tapcopy"):
            relay_argv = [tool, "copy", "-t", f"{self.seconds + 60:g}", "t0", "t1"]
        else:
            relay_argv = [*self.fastrelay, "tap:t0", "tap:t1"]
        relay = self._start(procs, work, "relay", _in_ns(ns, relay_argv, self.relay_cpu))
        wait_until("the relay to attach to both taps", lambda: _lower_up(ns, ["t0", "t1"]),
                   15, [relay])
        gen = self._start(procs, work, "gen", _in_ns(
            ns, [tool, "gen", "-g", "-t", f"{self.seconds + 0.5:g}", "-s", str(row.size), "t0"],
            self.tool_cpu))
        # What the relay wrote into t1 is t1's rx counter: no sink process competes for
        # the generator's CPU, so the relay is what limits the rate.
        gen.go()
        time.sleep(0.3)
        rx0, cpu0, t0 = _rx_packets(ns, "t1"), relay.cpu_seconds(), time.monotonic()
        time.sleep(self.seconds)
        rx1, cpu1, t1 = _rx_packets(ns, "t1"), relay.cpu_seconds(), time.monotonic()
        if not gen.wait(20):
            raise BenchError(f"generator did not finish: {gen.stderr_tail()}")
        if not relay.alive():
            raise BenchError(f"relay exited: {relay.stderr_tail()}")
        row.sent = int(gen.result()["frames"])
        row.delivered = rx1 - rx0
        row.fps = row.delivered / (t1 - t0)
        row.gbit = row.fps * row.size * 8 / 1e9
        if cpu0 is not None and cpu1 is not None:
            row.relay_cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        if not row.delivered:
            raise BenchError("nothing delivered")

    def _tcp(self, row: TapRow, nss: Namespaces, procs: list[Proc], work: Path) -> None:
        """iperf3 host A -> host B through `fastrelay brA brB`."""
        from pyroute2 import IPRoute

        rns = nss.add("r")
        hosts = []
        with IPRoute(netns=rns) as ipr:
            for bridge, role, addr in (("brA", "a", A4), ("brB", "b", B4)):
                ipr.link("add", ifname=bridge, kind="bridge", br_stp_state=0)
                master = ipr.link_lookup(ifname=bridge)[0]
                ipr.link("set", index=master, state="up")
                hns = nss.add(role)
                hosts.append(hns)
                ipr.link("add", ifname=f"v{role}", kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": hns})
                ipr.link("set", index=ipr.link_lookup(ifname=f"v{role}")[0], master=master,
                         state="up")
                with IPRoute(netns=hns) as h:
                    index = h.link_lookup(ifname="eth0")[0]
                    h.link("set", index=index, state="up")
                    h.addr("add", index=index, address=addr, prefixlen=24)
        opt = ",offload=off" if row.scenario.endswith("plain") else ""
        relay = self._start(procs, work, "relay", _in_ns(
            rns, [*self.fastrelay, "-vv", f"brA{opt}", f"brB{opt}"], self.relay_cpu))

        def bridged() -> bool:
            with IPRoute(netns=rns) as ipr:
                return sum(1 for link in ipr.get_links()
                           if link.get("IFLA_MASTER") and link.get("IFLA_IFNAME", "").startswith("tap")) == 2
        wait_until("the relay's taps", bridged, 15, [relay])
        server = self._start(procs, work, "iperf3-s", _in_ns(
            hosts[1], ["iperf3", "-s", "-1", "-B", B4], self.tool_cpu))
        _settle(lambda: _ping(hosts[0], B4), 15)
        time.sleep(0.2)
        cpu0 = relay.cpu_seconds()
        res = subprocess.run(_in_ns(hosts[0], ["iperf3", "-c", B4, "-t", f"{self.seconds:g}",
                                               "-J"], self.tool_cpu),
                             capture_output=True, text=True, timeout=self.seconds + 30,
                             check=False)
        cpu1 = relay.cpu_seconds()
        server.wait(5)
        if res.returncode != 0:
            raise BenchError(f"iperf3: {res.stdout[-300:]}{res.stderr[-300:]}")
        data: dict[str, Any] = json.loads(res.stdout)
        end = data["end"]
        row.gbit = float(end["sum_received"]["bits_per_second"]) / 1e9
        row.delivered = int(end["sum_received"]["bytes"])
        row.sent = int(end["sum_sent"]["bytes"])
        if cpu0 is not None and cpu1 is not None:
            row.relay_cpu_pct = 100 * (cpu1 - cpu0) / float(end["sum_received"]["seconds"])


def _rx_packets(ns: str, name: str) -> int:
    """The rx_packets counter of interface name in ns."""
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        return int(ipr.link("get", ifname=name)[0].get("IFLA_STATS64")["rx_packets"])


def _ping(ns: str, addr: str) -> bool:
    """One ping from ns to addr answered within a second."""
    res = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", addr],
                         capture_output=True, timeout=10, check=False)
    return res.returncode == 0


def _settle(check: Callable[[], bool], timeout: float) -> None:
    """Retry check (itself bounded in time) until true; BenchError after timeout."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise BenchError("no path between the test hosts")


def best_tap_rows(rows: list[TapRow]) -> list[TapRow]:
    """Per scenario and size, the round with the highest rate (an error only if all failed)."""
    best: dict[tuple[str, int], TapRow] = {}
    for r in rows:
        key = (r.scenario, r.size)
        old = best.get(key)
        if old is None or (old.error and not r.error) or \
                (not r.error and (r.fps or r.gbit or 0) > (old.fps or old.gbit or 0)):
            best[key] = r
    return list(best.values())


def add_tap_ratios(rows: list[TapRow]) -> None:
    """fastrelay's frames/s over the C copy loop's at the same size, in this run."""
    base = {r.size: r for r in rows if r.scenario == "tapcopy-tap-p2p" and r.fps}
    for r in rows:
        b = base.get(r.size)
        if r.scenario == "fastrelay-tap-p2p" and r.fps and b is not None and b.fps:
            r.ratios["fps_x_tapcopy"] = r.fps / b.fps


def tap_table(rows: list[TapRow], markdown: bool) -> str:
    """The tap rows as a text or markdown table."""
    head = ["scenario", "size", "frames/s", "Gbit/s", "sent", "delivered", "relay CPU %",
            "x tapcopy", "note"]

    def cells(r: TapRow) -> list[str]:
        ratio = r.ratios.get("fps_x_tapcopy")
        return [r.scenario, str(r.size) if r.scenario in FRAME_SCENARIOS else "tcp",
                "-" if r.fps is None else f"{r.fps / 1e3:.0f}k",
                "-" if r.gbit is None else f"{r.gbit:.2f}", str(r.sent), str(r.delivered),
                "-" if r.relay_cpu_pct is None else f"{r.relay_cpu_pct:.0f}",
                "-" if ratio is None else f"{ratio:.2f}x",
                ("ERROR: " + " ".join(r.error.split())[:150]) if r.error else ""]
    table = [head] + [cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c) + " |" for c in table[1:]]
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in table)

"""The named scenario matrix: which relay, which wiring, and the endpoints each side uses."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .procs import PortPool

REPO = Path(__file__).resolve().parent.parent
HUB_SIZES = (2, 4, 8)
IDLE_PORTS = (0, 2, 6)   # the socket_vmnet scenario: idle ends beside one streaming pair
PAIRS_PORTS = 8          # the bulk unicast scenario: this many ends, half of them senders
LOOP = "127.0.0.1"
VXLAN_VNI = 42

# MAC ids of the ends of a unicast scenario (02:62:65:6e:63:ID, src/frame.h): sender k
# sends to sink k only; idle ends are announced sinks nobody sends to.
SENDER_ID, SINK_ID, IDLE_ID = 1, 101, 201


@dataclass
class Topology:
    """Wiring of one measurement; endpoints are bench endpoint specs (see src/endpoint.h).

    The sender side is a loadgen (throughput) or a ping client (latency); the
    sinks are sinks or, with exactly one, a reflector. A spec starting with
    tcp-listen:/unix-listen: waits for the relay (or the direct peer) to connect.
    """

    sender: str
    sinks: list[str]
    relay_args: list[str] | None = None          # None: direct link, no relay
    relay_tcp: list[int] = field(default_factory=list)   # ports the relay listens on
    relay_udp: list[int] = field(default_factory=list)   # ports the relay binds
    # A second relay of the same program, started before the first (the far end of a
    # relay-to-relay link); relay_tcp/relay_udp then list both relays' ports.
    relay2_args: list[str] | None = None
    # Unicast scenarios (switch mode): sender k (`sender`, then `more_senders`) sends to
    # sink k alone; every sink and idle end announces its MAC when it starts and counts
    # only what is addressed to it. Idle ends are sinks that are not measured.
    unicast: bool = False
    more_senders: list[str] = field(default_factory=list)
    idle: list[str] = field(default_factory=list)

    @property
    def senders(self) -> list[str]:
        """Every sender's endpoint, the first one first."""
        return [self.sender, *self.more_senders]

    def sender_args(self, k: int) -> list[str]:
        """Extra loadgen arguments of sender k: its MAC, and its sink's as destination."""
        return ["-i", str(SENDER_ID + k), "-d", str(SINK_ID + k)] if self.unicast else []

    def sink_args(self, k: int) -> list[str]:
        """Extra sink arguments of sink k (k >= len(sinks): idle end k - len(sinks))."""
        if not self.unicast:
            return []
        n = len(self.sinks)
        ident = SINK_ID + k if k < n else IDLE_ID + k - n
        return ["-i", str(ident), "-A", "-F"]


Maker = Callable[[PortPool, Path], Topology]


@dataclass(frozen=True)
class Scenario:
    """One row family of the table: a relay (or none) times a wiring (shape)."""

    name: str
    relay: str          # direct | fastrelay | naive | netrelay
    shape: str          # udp-p2p, tcp-hub-4, ...; direct ones: udp, tcp, unix
    nsinks: int         # the measured receivers (idle ends are not)
    make: Maker
    unicast: bool = False   # a switch scenario: see Topology.unicast

    @property
    def latency_ok(self) -> bool:
        """Ping-pong needs exactly two ends: the echo must only reach the pinger. Not through
        switches (the link shapes): the reflector echoes frames unchanged, so the pinger's
        MAC would arrive from both sides, a move per frame, which a switch takes for a loop."""
        return self.nsinks == 1 and not self.unicast and not self.shape.endswith("-link")

    @property
    def transport(self) -> str:
        """The sender's transport, to pick the direct-* row a relay row is compared with."""
        return self.shape.split("-")[0] if self.shape != "mixed" else "udp"


def _udp_pair(ports: PortPool) -> tuple[int, int]:
    """Two ports for the two ends of a UDP link."""
    return ports.take(), ports.take()


def direct_udp(ports: PortPool, tmp: Path) -> Topology:
    """qemu socket,udp= on both ends, no relay."""
    a, b = _udp_pair(ports)
    return Topology(sender=f"udp:{a}:{LOOP}:{b}", sinks=[f"udp:{b}:{LOOP}:{a}"])


def direct_tcp(ports: PortPool, tmp: Path) -> Topology:
    """qemu socket,listen= on the sink, socket,connect= on the sender, no relay."""
    p = ports.take()
    return Topology(sender=f"tcp:{LOOP}:{p}", sinks=[f"tcp-listen:{LOOP}:{p}"])


def direct_unix(ports: PortPool, tmp: Path) -> Topology:
    """qemu stream over a unix socket (server=on at the sink), no relay."""
    path = tmp / "direct.sock"
    return Topology(sender=f"unix:{path}", sinks=[f"unix-listen:{path}"])


def udp_p2p(ports: PortPool, tmp: Path) -> Topology:
    """Relay LPORT:IP:SPORT LPORT:IP:SPORT between two qemu-like UDP ends."""
    g, s = _udp_pair(ports)
    a, b = _udp_pair(ports)
    return Topology(sender=f"udp:{g}:{LOOP}:{a}", sinks=[f"udp:{s}:{LOOP}:{b}"],
                    relay_args=[f"{a}:{LOOP}:{g}", f"{b}:{LOOP}:{s}"], relay_udp=[a, b])


def tcp_p2p(ports: PortPool, tmp: Path) -> Topology:
    """Relay connects out to two qemu listen= ends (the usual way to glue two VMs)."""
    p1, p2 = ports.take(), ports.take()
    return Topology(sender=f"tcp-listen:{LOOP}:{p1}", sinks=[f"tcp-listen:{LOOP}:{p2}"],
                    relay_args=[f"{LOOP}:{p1}", f"{LOOP}:{p2}"])


def unix_p2p(ports: PortPool, tmp: Path) -> Topology:
    """Relay connects out to two unix stream listeners (qemu stream server=on, passt-like)."""
    a, b = tmp / "a.sock", tmp / "b.sock"
    return Topology(sender=f"unix-listen:{a}", sinks=[f"unix-listen:{b}"],
                    relay_args=[f"unix:{a}", f"unix:{b}"])


def mixed(ports: PortPool, tmp: Path) -> Topology:
    """UDP sender -> relay -> TCP listener: one VM on socket,udp=, the other on listen=."""
    g, a = _udp_pair(ports)
    p = ports.take()
    return Topology(sender=f"udp:{g}:{LOOP}:{a}", sinks=[f"tcp-listen:{LOOP}:{p}"],
                    relay_args=[f"{a}:{LOOP}:{g}", f"{LOOP}:{p}"], relay_udp=[a])


def tcp_hub(n: int) -> Maker:
    """Hub `-l PORT`; the sender and n-1 sinks connect as clients (qemu connect=)."""
    def make(ports: PortPool, tmp: Path) -> Topology:
        h = ports.take()
        return Topology(sender=f"tcp:{LOOP}:{h}", sinks=[f"tcp:{LOOP}:{h}"] * (n - 1),
                        relay_args=["-l", str(h)], relay_tcp=[h])
    return make


def udp_hub(n: int) -> Maker:
    """Hub `-l PORT T1 .. Tn` with n UDP targets: one sender, n-1 sinks (qemu udp=)."""
    def make(ports: PortPool, tmp: Path) -> Topology:
        h = ports.take()
        ends = [_udp_pair(ports) for _ in range(n)]  # (our port, relay port)
        specs = [f"udp:{mine}:{LOOP}:{theirs}" for mine, theirs in ends]
        return Topology(sender=specs[0], sinks=specs[1:],
                        relay_args=["-l", str(h)] + [f"{theirs}:{LOOP}:{mine}" for mine, theirs in ends],
                        relay_tcp=[h], relay_udp=[theirs for _, theirs in ends])
    return make


def switch_link(kind: str) -> Maker:
    """Two switches joined by one link (@kind "udp": a plain UDP trunk, "vxlan": VXLAN),
    a UDP end on each: sender -> switch A -> link -> switch B -> sink. Both switches flood
    the sender's broadcast frames to their one other port, as for unknown unicast."""
    def make(ports: PortPool, tmp: Path) -> Topology:
        g, s = _udp_pair(ports)       # the ends' own ports
        a, b = _udp_pair(ports)       # the switches' ports facing the ends
        x, y = _udp_pair(ports)       # the link: switch A's and switch B's side
        h1, h2 = ports.take(), ports.take()
        if kind == "vxlan":
            link_a, link_b = f"vxlan:{VXLAN_VNI}:{x}:{LOOP}:{y}", f"vxlan:{VXLAN_VNI}:{y}:{LOOP}:{x}"
        else:
            link_a, link_b = f"{x}:{LOOP}:{y},trunk", f"{y}:{LOOP}:{x},trunk"
        return Topology(sender=f"udp:{g}:{LOOP}:{a}", sinks=[f"udp:{s}:{LOOP}:{b}"],
                        relay_args=["--switch", "-l", f"{LOOP}:{h1}", f"{a}:{LOOP}:{g}", link_a],
                        relay2_args=["--switch", "-l", f"{LOOP}:{h2}", link_b,
                                     f"{b}:{LOOP}:{s}"],
                        relay_tcp=[h1, h2], relay_udp=[a, x, y, b])
    return make


def _hub_argv(mode: str, port: int) -> list[str]:
    """The relay's arguments for a hub (mode "hub") or a switch on TCP @port."""
    return (["--switch"] if mode == "switch" else []) + ["-l", str(port)]


def tcp_pairs(mode: str, n: int) -> Maker:
    """n ends on a TCP hub or switch: n/2 bulk senders, each sending unicast to its own sink."""
    def make(ports: PortPool, tmp: Path) -> Topology:
        h = ports.take()
        end = f"tcp:{LOOP}:{h}"
        return Topology(sender=end, sinks=[end] * (n // 2), relay_args=_hub_argv(mode, h),
                        relay_tcp=[h], unicast=True, more_senders=[end] * (n // 2 - 1))
    return make


def tcp_idle(mode: str, idle: int) -> Maker:
    """One sender streaming unicast to one sink, with @idle more ends connected, announced
    and reading (socket_vmnet's case: idle VMs on the segment)."""
    def make(ports: PortPool, tmp: Path) -> Topology:
        h = ports.take()
        end = f"tcp:{LOOP}:{h}"
        return Topology(sender=end, sinks=[end], relay_args=_hub_argv(mode, h), relay_tcp=[h],
                        unicast=True, idle=[end] * idle)
    return make


# Shapes a relay can be put in; netrelay has no unix sockets.
SHAPES: dict[str, tuple[int, Maker]] = {
    "udp-p2p": (1, udp_p2p),
    "tcp-p2p": (1, tcp_p2p),
    "unix-p2p": (1, unix_p2p),
    "mixed": (1, mixed),
    **{f"tcp-hub-{n}": (n - 1, tcp_hub(n)) for n in HUB_SIZES},
    **{f"udp-hub-{n}": (n - 1, udp_hub(n)) for n in HUB_SIZES},
}
RELAY_SHAPES: dict[str, list[str]] = {
    "fastrelay": list(SHAPES),
    "naive": list(SHAPES),
    "netrelay": [s for s in SHAPES if s != "unix-p2p"],
}
# Unicast shapes (issue 10), fastrelay only: each as a hub and as a switch, so that the
# switch's gain (or cost) is a ratio of two rows of one run.
UNICAST_SHAPES: dict[str, tuple[int, Maker]] = {
    **{f"tcp-{mode}-pairs-{PAIRS_PORTS}": (PAIRS_PORTS // 2, tcp_pairs(mode, PAIRS_PORTS))
       for mode in ("hub", "switch")},
    **{f"tcp-{mode}-idle-{n}": (1, tcp_idle(mode, n))
       for mode in ("hub", "switch") for n in IDLE_PORTS},
}

# Links between two fastrelay switches (issue 15), fastrelay only: VXLAN beside the plain
# UDP trunk, same ends and sizes; `x udp-link` is the VXLAN row over the UDP one.
LINK_SHAPES: dict[str, tuple[int, Maker]] = {
    "udp-link": (1, switch_link("udp")),
    "vxlan-link": (1, switch_link("vxlan")),
}


def all_scenarios() -> list[Scenario]:
    """Every scenario name the runner knows, available or not, in table order."""
    out = [Scenario("direct-udp", "direct", "udp", 1, direct_udp),
           Scenario("direct-tcp", "direct", "tcp", 1, direct_tcp),
           Scenario("direct-unix", "direct", "unix", 1, direct_unix)]
    for shape in SHAPES:
        for relay, shapes in RELAY_SHAPES.items():
            if shape in shapes:
                out.append(Scenario(f"{relay}-{shape}", relay, shape, SHAPES[shape][0],
                                    SHAPES[shape][1]))
    for shape, (nsinks, make) in LINK_SHAPES.items():
        out.append(Scenario(f"fastrelay-{shape}", "fastrelay", shape, nsinks, make))
    for shape, (nsinks, make) in UNICAST_SHAPES.items():
        out.append(Scenario(f"fastrelay-{shape}", "fastrelay", shape, nsinks, make, unicast=True))
    return out


def select(patterns: list[str]) -> list[Scenario]:
    """Scenarios matching any of the names or globs, in table order; unknown patterns fail."""
    known = all_scenarios()
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(s.name, pat) for s in known):
            raise SystemExit(f"bench: no scenario matches {pat!r} (try --list)")
    return [s for s in known if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def relay_argv(relay: str, naive_exe: Path, lifetime: float,
               fastrelay_cmd: list[str] | None = None) -> list[str]:
    """The command that starts @relay; scenario arguments are appended to it.

    @fastrelay_cmd replaces `python -m fastrelay` (another build, another
    interpreter, or any netrelay-compatible command to test the wiring).
    """
    if relay == "fastrelay":
        return list(fastrelay_cmd) if fastrelay_cmd else [sys.executable, "-m", "fastrelay"]
    if relay == "naive":
        return [str(naive_exe), "-t", f"{lifetime:.0f}"]
    if relay == "netrelay":
        exe = shutil.which("netrelay")
        assert exe is not None
        return [exe]
    raise ValueError(relay)


def availability(fastrelay_cmd: list[str] | None = None) -> dict[str, str | None]:
    """Relay -> None if it can run here, else why not (the runner skips those rows)."""
    if fastrelay_cmd:
        found = shutil.which(fastrelay_cmd[0])
        return {"direct": None, "naive": None,
                "fastrelay": None if found else f"{fastrelay_cmd[0]} not found",
                "netrelay": None if shutil.which("netrelay") else "no netrelay on PATH"}
    # The compiled core and the `python -m fastrelay` entry point must both be there.
    probe = ("import importlib.util, fastrelay._core\n"
             "assert importlib.util.find_spec('fastrelay.__main__'), 'no fastrelay.__main__'")
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=False,
                         capture_output=True, text=True, timeout=60)
    why_fast = None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["import failed"])[-1]
        why_fast = f"fastrelay not runnable ({last})"
    return {
        "direct": None,
        "naive": None,
        "fastrelay": why_fast,
        "netrelay": None if shutil.which("netrelay") else "no netrelay on PATH",
    }

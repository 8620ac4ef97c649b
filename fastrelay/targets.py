"""Target syntax: turns netrelay-style endpoint arguments into typed target descriptions.

Every accepted form is parsed here and nowhere else; `TARGET_HELP` documents them all.
Parsing checks syntax only: names are resolved and sockets opened by the endpoints.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from ._core import VXLAN_PEERS_MAX_COUNT, VXLAN_VNI_MAX_VALUE
from .errors import TargetError

__all__ = [
    "Target", "StdioTarget", "UDPTarget", "TCPTarget", "TCPListenTarget", "UnixTarget",
    "UnixListenTarget", "UnixDgramTarget", "BridgeTarget", "TapTarget", "VxlanTarget",
    "VXLAN_PEERS_MAX", "VXLAN_VNI_MAX", "pair_problem", "parse_target", "vxlan_text",
    "parse_listen", "TARGET_HELP", "TARGET_FORMS", "TARGET_NOTES", "TargetForm", "target_help",
    "wrap_netdev",
]


@dataclass(frozen=True)
class StdioTarget:
    """`-`: raw frames on stdin/stdout."""

    def __str__(self) -> str:
        return "-"


@dataclass(frozen=True)
class UDPTarget:
    """`LPORT:HOST:SPORT`: bind LPORT, send to HOST:SPORT, accept from any source."""

    lport: int
    host: str
    sport: int
    trunk: bool = False      # a link to another relay: split horizon (",trunk")

    def __str__(self) -> str:
        return f"udp {_hostport(self.host, self.sport)} (local port {self.lport})"


@dataclass(frozen=True)
class TCPTarget:
    """`HOST:PORT`: connect out with qemu's stream framing."""

    host: str
    port: int
    tls: bool = False            # ",tls": mutual TLS (see tls.py)
    tls_name: str | None = None  # ",tls-name=NAME": the name the server's certificate must
                                 # carry, instead of host
    trunk: bool = False

    def __str__(self) -> str:
        return f"tcp {_hostport(self.host, self.port)}" + (" (tls)" if self.tls else "")


@dataclass(frozen=True)
class TCPListenTarget:
    """`listen:[HOST:]PORT`: accept stream clients (qemu socket,connect= / stream)."""

    host: str | None
    port: int
    tls: bool = False            # ",tls": clients must complete mutual TLS
    trunk: bool = False

    def __str__(self) -> str:
        return (f"tcp listener {_hostport(self.host or '*', self.port)}"
                + (" (tls)" if self.tls else ""))


@dataclass(frozen=True)
class UnixTarget:
    """`unix:PATH`: connect to a unix stream socket (qemu stream server, passt)."""

    path: str
    trunk: bool = False

    def __str__(self) -> str:
        return f"unix {self.path}"


@dataclass(frozen=True)
class UnixListenTarget:
    """`unix-listen:PATH`: accept unix stream clients (qemu stream with server=off)."""

    path: str
    trunk: bool = False

    def __str__(self) -> str:
        return f"unix listener {self.path}"


@dataclass(frozen=True)
class UnixDgramTarget:
    """`unixgram:LOCAL[:REMOTE]`: unix datagrams; without REMOTE, reply to the last sender."""

    local: str
    remote: str | None
    trunk: bool = False

    def __str__(self) -> str:
        return f"unixgram {self.local} -> {self.remote or '(last sender)'}"


@dataclass(frozen=True)
class BridgeTarget:
    """`BRIDGE[,OPTIONS]`, a bare interface name: a new tap enslaved to that bridge."""

    name: str
    queues: int = 1          # tap queues (IFF_MULTI_QUEUE when > 1), one fd each
    offload: bool = True     # allow GSO offloads where every peer is a tap ("offload=off")
    trunk: bool = False

    def __str__(self) -> str:
        return f"bridge {self.name}"


@dataclass(frozen=True)
class TapTarget:
    """`tap:NAME[,OPTIONS]`: an existing (e.g. persistent, user-owned) tap device."""

    name: str
    queues: int = 1
    offload: bool = True
    trunk: bool = False

    def __str__(self) -> str:
        return f"tap {self.name}"


# The 24-bit VXLAN network identifier, and how many remote endpoints one target may have.
VXLAN_VNI_MAX: int = VXLAN_VNI_MAX_VALUE
VXLAN_PEERS_MAX: int = VXLAN_PEERS_MAX_COUNT


@dataclass(frozen=True)
class VxlanTarget:
    """`vxlan:VNI:LPORT:HOST:RPORT[,peer=HOST:PORT]...`: a VXLAN tunnel endpoint (RFC 7348).

    Binds LPORT (on --bind or every address); the remote endpoints (VTEPs) are HOST:RPORT
    and every `,peer=`. Always a trunk of its switch (split horizon); see VxlanPort.
    """

    vni: int
    lport: int
    peers: tuple[tuple[str, int], ...]  # (host, port) of each remote VTEP; HOST:RPORT first
    trunk: bool = False      # ",trunk": allowed, and changes nothing (always a trunk)

    def __str__(self) -> str:
        more = f" and {len(self.peers) - 1} more" if len(self.peers) > 1 else ""
        return (f"vxlan {self.vni} {_hostport(*self.peers[0])}{more} "
                f"(local port {self.lport})")


Target = Union[StdioTarget, UDPTarget, TCPTarget, TCPListenTarget, UnixTarget,
               UnixListenTarget, UnixDgramTarget, BridgeTarget, TapTarget, VxlanTarget]
T = TypeVar("T", bound=Target)


@dataclass(frozen=True)
class TargetForm:
    """One target form as documented: `--help` and the man page are both made from these."""

    syntax: str                  # as the user writes it, e.g. "LPORT:HOST:SPORT"
    meaning: str                 # one paragraph, wrapped by whoever shows it
    qemu: tuple[str, ...] = ()   # the `-netdev` values of the qemu side that pairs with it


TARGET_FORMS: tuple[TargetForm, ...] = (
    TargetForm("-", "stdio: one read is one frame, frames written unframed (pipelines, tests)."),
    TargetForm("LPORT:HOST:SPORT",
               "UDP: bind LPORT, send to HOST:SPORT, accept any source. One port may be "
               "omitted (:HOST:SPORT, LPORT:HOST:): it then equals the other, as netrelay's "
               "manual says.",
               ("socket,id=n0,udp=127.0.0.1:LPORT,localaddr=127.0.0.1:SPORT",
                ("dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=SPORT,"
                 "remote.type=inet,remote.host=127.0.0.1,remote.port=LPORT"))),
    TargetForm("LPORT::SPORT",
               "UDP with a guest on this host (the form of netrelay's TODO): the same as "
               "LPORT:127.0.0.1:SPORT. Both ports are needed and must differ, or the relay "
               "would send to itself.",
               ("socket,id=n0,udp=127.0.0.1:LPORT,localaddr=127.0.0.1:SPORT",)),
    TargetForm("HOST:PORT", "TCP client, a 4-byte big-endian length before each frame.",
               ("socket,id=n0,listen=127.0.0.1:PORT",
                "stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=PORT")),
    TargetForm("[V6ADDR]:PORT, LPORT:[V6ADDR]:SPORT",
               "the IPv6 forms (they work, unlike in netrelay); a host name may stand for any "
               "address. qemu's stream accepts ::1; its socket and dgram are IPv4 only."),
    TargetForm("listen:[HOST:]PORT",
               "TCP listener; every client joins (one at a time in point-to-point mode).",
               ("socket,id=n0,connect=127.0.0.1:PORT",
                "stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=PORT")),
    TargetForm("HOST:PORT,tls[,tls-name=NAME], listen:[HOST:]PORT,tls",
               "the same over mutual TLS (1.3; 1.2 at least), with --tls-cert, --tls-key and "
               "--tls-ca: the listener requires a client certificate, the client checks the "
               "listener's, and that it names HOST (or NAME). For links between relays."),
    TargetForm("unix:PATH", "unix stream client, the same framing (e.g. passt).",
               ("stream,id=n0,server=on,addr.type=unix,addr.path=PATH",)),
    TargetForm("unix-listen:PATH", "unix stream listener.",
               ("stream,id=n0,server=off,addr.type=unix,addr.path=PATH",)),
    TargetForm("unixgram:LOCAL:REMOTE",
               "unix datagrams: bind LOCAL, send to REMOTE (without :REMOTE, reply to the last "
               "sender).",
               (("dgram,id=n0,local.type=unix,local.path=REMOTE,remote.type=unix,"
                 "remote.path=LOCAL"),)),
    TargetForm("vxlan:VNI:LPORT:HOST:RPORT[,peer=HOST:PORT]...",
               "a VXLAN tunnel endpoint (RFC 7348, standard UDP port 4789; Linux's default "
               "is 8472): bind LPORT, send to the remote endpoint HOST:RPORT and each "
               f"peer= (at most {VXLAN_PEERS_MAX}), accept only from them (any source "
               f"port), with VNI 0..{VXLAN_VNI_MAX}. In a --switch, known MACs go to the "
               "one endpoint they were learned behind; broadcast and unknown destinations go "
               "to every endpoint (head-end replication), as in a hub or point to point, "
               "where everything floods. Always a trunk: what comes in over VXLAN never "
               "goes back out over VXLAN or another trunk. Never fragmented: the inner MTU "
               "is the path MTU minus 50 (IPv4) or 70 (IPv6); a larger frame is dropped "
               "and counted."),
    TargetForm("tap:NAME[,OPTS]",
               "an existing tap device; a persistent tap made for you "
               "(ip tuntap add NAME mode tap user YOU [multi_queue]) needs no root.",
               ("tap,id=n0,ifname=NAME,script=no,downscript=no",)),
    TargetForm("BRIDGE[,OPTS]",
               "a bridge name (br0, br-lan, vmbr0.10): a new tap with the bridge's MTU, up "
               "and enslaved to it, removed at exit. Needs root (CAP_NET_ADMIN)."),
)

# Said once after the forms, in --help and in the man page.
TARGET_NOTES: tuple[str, ...] = (
    ("OPTS of a tap or bridge: queues=N (a multi-queue tap, one descriptor per queue), "
     "offload=off (never take GSO super-frames from the kernel). Taps use vnet headers as "
     "qemu's vhost-net does; between two taps (point to point) 64 KiB TSO frames pass "
     "unsegmented."),
    "A PATH starting with @ names an abstract unix socket.",
    ("TARGET,trunk (any target but -, and -l LISTEN,trunk): a link to another relay; for a "
     "listener, every client of it. In a hub or switch, what comes in on a trunk never goes "
     "out on another trunk (split horizon), so relays linked in a triangle or a full mesh, "
     "one link per pair, never loop a frame: fastrelay --switch -l 5000 "
     "relay2.example:5001,trunk. The first ',' of a target starts its options: no address "
     "or path may contain one."),
)


def wrap_netdev(value: str, width: int) -> list[str]:
    """A `-netdev` value cut after commas into lines of at most width (a part may exceed)."""
    lines = [""]
    for part in value.split(","):
        piece = part if not lines[-1] else "," + part
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] += piece
    return lines


def target_help(width: int = 100) -> str:
    """The `targets:` section of --help, from TARGET_FORMS and TARGET_NOTES."""
    col = 25  # where meanings start: the longer syntaxes get a line of their own
    out = ["targets:"]
    for form in TARGET_FORMS:
        text = textwrap.wrap(form.meaning, width - col)
        head = "  " + form.syntax
        if len(head) + 2 <= col:
            out.append(head.ljust(col) + text[0])
        else:
            out += [head, " " * col + text[0]]
        out += [" " * col + line for line in text[1:]]
        for netdev in form.qemu:
            lines = wrap_netdev(netdev, width - col - 19)
            out.append(" " * (col + 2) + "qemu -netdev " + lines[0])
            out += [" " * (col + 15) + line for line in lines[1:]]
    for note in TARGET_NOTES:
        out += textwrap.wrap(note, width, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(out)


TARGET_HELP = target_help()

# The peer of `LPORT::SPORT`: netrelay's TODO says an empty address means this one.
LOCAL_UDP_HOST = "127.0.0.1"
_PORT = re.compile(r"[0-9]{1,5}\Z")
_VNI = re.compile(r"[0-9]{1,8}\Z")
# Linux interface names: 1-15 bytes, no '/', ':', or white space; not "." or "..".
_IFNAME = re.compile(r"[^/:\s]{1,15}\Z")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(arg: str, text: str, what: str) -> int:
    if not _PORT.match(text) or not 1 <= int(text) <= 65535:
        raise TargetError(arg, f"{what} {text!r} is not a port number (1-65535)")
    return int(text)


def _split(arg: str, text: str) -> list[str]:
    """Split text (of target arg) on ':' outside of [brackets]; brackets are removed."""
    parts: list[str] = []
    rest = text
    while True:
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                raise TargetError(arg, "'[' without ']'")
            host = rest[1:close]
            if not host:
                raise TargetError(arg, "empty IPv6 address in []")
            parts.append(host)
            rest = rest[close + 1:]
            if not rest:
                return parts
            if rest[0] != ":":
                raise TargetError(arg, "expected ':' after ']'")
            rest = rest[1:]
            continue
        head, sep, rest = rest.partition(":")
        if "[" in head or "]" in head:
            raise TargetError(arg, "misplaced '[' or ']'")
        parts.append(head)
        if not sep:
            return parts


def _host(arg: str, host: str) -> str:
    if not host:
        raise TargetError(arg, "missing host")
    return host


def _path(arg: str, path: str) -> str:
    if not path:
        raise TargetError(arg, "missing socket path")
    # '@name' is the usual spelling of an abstract socket; the kernel wants a NUL.
    return "\0" + path[1:] if path.startswith("@") else path


def _ifname(arg: str, name: str) -> str:
    if not _IFNAME.match(name) or name in (".", ".."):
        raise TargetError(arg, "not an address and not a valid interface name")
    return name


def _peer(arg: str, text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` of a `,peer=` option."""
    parts = _split(arg, text)
    if len(parts) != 2 or not parts[0]:
        raise TargetError(arg, f"peer={text!r}: expected peer=HOST:PORT or peer=[IPV6]:PORT")
    return parts[0], _port(arg, parts[1], "peer port")


def _with_options(arg: str, target: T, options: list[str]) -> T:
    """target with the options written after its first ',' applied.

    One parser for every kind: `trunk` (any target but stdio), `tls` (TCP clients and
    listeners) and `tls-name=NAME` (TCP clients), `queues=N` and `offload=on|off` (taps
    and bridges), `peer=HOST:PORT` (VXLAN, repeatable): a target takes an option when it
    has the field the option sets.
    """
    if not options:
        return target
    fields = {f.name for f in dataclasses.fields(target)}
    if not fields:
        raise TargetError(arg, "stdio ('-') takes no options (',trunk' is for links to "
                               "other relays)")
    tap = "queues" in fields
    values: dict[str, Any] = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        if key == "trunk" and not sep:
            values["trunk"] = True
        elif key == "tls" and not sep and "tls" in fields:
            values["tls"] = True
        elif key == "tls-name" and value and "tls_name" in fields:
            values["tls_name"] = value
        elif key in ("tls", "tls-name"):
            raise TargetError(arg, "tls is for TCP clients (HOST:PORT,tls[,tls-name=NAME]) "
                                   "and listeners (listen:PORT,tls)")
        elif tap and key == "queues" and sep and value.isdigit() and 1 <= int(value) <= 256:
            values["queues"] = int(value)
        elif tap and key == "offload" and value in ("on", "off"):
            values["offload"] = value == "on"
        elif key == "peer" and sep and "peers" in fields:
            values["peers"] = values.get("peers", ()) + (_peer(arg, value),)
        elif tap:
            raise TargetError(arg, f"unknown tap option {opt!r} "
                                   f"(trunk, queues=1..256, offload=on|off)")
        elif key in ("queues", "offload"):
            raise TargetError(arg, f"option {opt!r} is for tap and bridge targets only")
        elif key == "peer":
            raise TargetError(arg, f"option {opt!r} is for vxlan: targets only")
        else:
            raise TargetError(arg, f"unknown target option {opt!r} (known: trunk; tls and "
                                   f"tls-name=NAME for TCP; queues=N and offload=on|off for "
                                   f"taps and bridges; peer=HOST:PORT for vxlan:)")
    if "tls_name" in values and not values.get("tls"):
        raise TargetError(arg, "tls-name=NAME goes with ,tls")
    if isinstance(target, VxlanTarget) and "peers" in values:
        values["peers"] = _check_peers(arg, target.peers + values["peers"])
    return dataclasses.replace(target, **values)


def _check_peers(arg: str, peers: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """The remote endpoints of a VXLAN target, refused if too many or written twice."""
    if len(peers) > VXLAN_PEERS_MAX:
        raise TargetError(arg, f"{len(peers)} remote endpoints: at most {VXLAN_PEERS_MAX}")
    seen = set()
    for host, port in peers:
        if (host.lower(), port) in seen:
            raise TargetError(arg, f"remote endpoint {_hostport(host, port)} is given twice")
        seen.add((host.lower(), port))
    return peers


def _vxlan(arg: str, rest: str) -> VxlanTarget:
    """`VNI:LPORT:HOST:RPORT` (either port may be omitted: it then equals the other)."""
    parts = _split(arg, rest)
    if len(parts) != 4:
        raise TargetError(arg, "expected vxlan:VNI:LPORT:HOST:RPORT (IPv6 in [brackets])")
    vni_s, lport_s, host, rport_s = parts
    if not _VNI.match(vni_s) or not 0 <= int(vni_s) <= VXLAN_VNI_MAX:
        raise TargetError(arg, f"VNI {vni_s!r} is not a number within 0..{VXLAN_VNI_MAX}")
    if not lport_s and not rport_s:
        raise TargetError(arg, "VXLAN needs a local port, a remote port, or both (4789 is "
                               "the standard one)")
    lport = _port(arg, lport_s or rport_s, "local port")
    rport = _port(arg, rport_s or lport_s, "remote port")
    return VxlanTarget(int(vni_s), lport, ((_host(arg, host), rport),))


def pair_problem(targets: list[Target] | tuple[Target, ...]) -> str | None:
    """Why these two targets cannot be linked point to point, or None.

    Two VXLAN endpoints would pass nothing: both are trunks (split horizon).
    """
    if len(targets) == 2 and all(isinstance(t, VxlanTarget) for t in targets):
        return ("two vxlan: targets point to point would forward nothing: what comes in over "
                "VXLAN never goes back out over VXLAN (split horizon); give one vxlan: "
                "target several remote endpoints (,peer=HOST:PORT) instead")
    return None


def vxlan_text(vni: int, port: int, peers: list[str]) -> str:
    """The target string of a VXLAN endpoint given as parts (the config's table form):
    vxlan:VNI:PORT:FIRST,peer=SECOND,... (each peer as HOST:PORT, written as given)."""
    first, *rest = peers
    return f"vxlan:{vni}:{port}:{first}" + "".join(f",peer={p}" for p in rest)


def _local_udp(arg: str, lport_s: str, sport_s: str) -> UDPTarget:
    """`LPORT::SPORT` (netrelay's TODO): UDP with 127.0.0.1, both ports given and distinct."""
    if not lport_s or not sport_s:
        raise TargetError(arg, "LPORT::SPORT (UDP on 127.0.0.1) needs both ports "
                               "(to omit one, name the host: LPORT:HOST: or :HOST:SPORT)")
    lport = _port(arg, lport_s, "listening port")
    sport = _port(arg, sport_s, "sending port")
    if lport == sport:
        raise TargetError(arg, f"LPORT::SPORT needs two different ports: port {lport} "
                               f"would send every frame back to itself")
    return UDPTarget(lport, LOCAL_UDP_HOST, sport)


def _listen(arg: str, text: str) -> TCPListenTarget | UnixListenTarget:
    """PORT, HOST:PORT, [V6]:PORT or unix:PATH, without options."""
    if text.startswith("unix:"):
        return UnixListenTarget(_path(arg, text[5:]))
    parts = _split(arg, text)
    if len(parts) == 1:
        return TCPListenTarget(None, _port(arg, parts[0], "listening port"))
    if len(parts) == 2:
        return TCPListenTarget(_host(arg, parts[0]), _port(arg, parts[1], "listening port"))
    raise TargetError(arg, "expected PORT, HOST:PORT, [IPV6]:PORT or unix:PATH")


def parse_listen(arg: str) -> TCPListenTarget | UnixListenTarget:
    """Parse the value of -l: PORT, HOST:PORT, [V6]:PORT or unix:PATH, then its options
    (`,trunk`; `,tls` for TCP)."""
    text, *options = arg.split(",")
    return _with_options(arg, _listen(arg, text), options)


def parse_target(arg: str) -> Target:
    """Parse one target argument; raise TargetError naming it and the reason.

    The first ',' starts the options (`,trunk`; `,tls` and `,tls-name=NAME` for TCP;
    `,queues=N` and `,offload=off` for taps), so no address or path may contain one.
    """
    text, *options = arg.split(",")
    return _with_options(arg, _target(arg, text), options)


def _target(arg: str, text: str) -> Target:
    """The target text (arg without its options) stands for."""
    if text == "-":
        return StdioTarget()
    if not text:
        raise TargetError(arg, "empty target")
    scheme, sep, rest = text.partition(":")
    if sep:
        if scheme == "unix":
            return UnixTarget(_path(arg, rest))
        if scheme == "unix-listen":
            return UnixListenTarget(_path(arg, rest))
        if scheme == "unixgram":
            local, sep2, remote = rest.partition(":")
            return UnixDgramTarget(_path(arg, local), _path(arg, remote) if sep2 else None)
        if scheme == "listen":
            return _listen(arg, rest)
        if scheme == "tap":
            return TapTarget(_ifname(arg, rest))
        if scheme == "vxlan":
            return _vxlan(arg, rest)
    parts = _split(arg, text)
    if len(parts) == 1:
        if _PORT.match(parts[0]):
            raise TargetError(arg, "a bare port is not a target (use -l PORT for a hub, "
                                   "or LPORT:HOST:SPORT / HOST:PORT)")
        return BridgeTarget(_ifname(arg, parts[0]))
    if len(parts) == 2:
        return TCPTarget(_host(arg, parts[0]), _port(arg, parts[1], "port"))
    if len(parts) == 3:
        lport_s, host, sport_s = parts
        if not host:
            return _local_udp(arg, lport_s, sport_s)
        if not lport_s and not sport_s:
            raise TargetError(arg, "UDP needs a listening port, a sending port, or both")
        lport = _port(arg, lport_s or sport_s, "listening port")
        sport = _port(arg, sport_s or lport_s, "sending port")
        return UDPTarget(lport, _host(arg, host), sport)
    raise TargetError(arg, "too many ':' (write IPv6 addresses in [brackets])")

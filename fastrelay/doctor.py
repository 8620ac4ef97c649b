"""Bridge preflight checks (`fastrelay doctor`): host settings that stop bridged frames.

Each check returns findings, one line each: what is wrong, where, and the fix. A check
that this host cannot make (no permission, a program missing) says "could not check X:
why" instead of raising; such a line is not a problem. The checks only read: links
through netlink (pyroute2), sysctls from /proc, the firewall with nft or iptables-save
(see firewall.py). They run once per start of a bridge or tap target, in a worker thread
(pyroute2 runs an asyncio loop of its own inside its calls), and on demand from the CLI.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._core import FRAME_MAX_LEN
from .errors import RelayError
from .firewall import Block, FirewallUnreadable, Ruleset, blocks, nft_available, read_ruleset

log = logging.getLogger("fastrelay")

__all__ = ["Finding", "Host", "check_bridges", "check_port", "warn_port"]

# Ethernet header, and the 802.1Q tag a VLAN-filtering bridge may leave on a frame.
ETH_HLEN = 14
VLAN_HLEN = 4
_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000     # carrier: a tap with a reader, a veth whose peer is up
_BRIDGE_NF = "/proc/sys/net/bridge"
# bridge-nf-call-X: what it sends through the host firewall, and the bridge option that
# turns it on for one bridge (ip link ... type bridge nf_call_X 1) even when the sysctl is 0.
_NF_CALLS = (("iptables", "IPv4", "IFLA_BR_NF_CALL_IPTABLES"),
             ("ip6tables", "IPv6", "IFLA_BR_NF_CALL_IP6TABLES"),
             ("arptables", "ARP", "IFLA_BR_NF_CALL_ARPTABLES"))
# Firewall families whose forward hook bridged frames pass, by the bridge-nf-call in force.
_FAMILIES = {"iptables": {"ip", "inet"}, "ip6tables": {"ip6", "inet"}}
_FRAMES = {"ip": "bridged IPv4 frames", "ip6": "bridged IPv6 frames",
           "inet": "bridged IPv4 and IPv6 frames"}


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's answer: a problem and its fix, or a check not made."""

    where: str          # the interface it is about
    what: str           # what is wrong, or "could not check X: why"
    fix: str = ""       # empty for a check that could not be made
    problem: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" + (f"; fix: {self.fix}" if self.fix else "")


def _unchecked(where: str, what: str, why: str) -> Finding:
    return Finding(where, f"could not check {what}: {why}", problem=False)


@dataclass
class Link:
    """What the checks need of one interface."""

    index: int
    name: str
    kind: str | None
    flags: int
    mtu: int
    master: int | None
    data: dict[str, Any]    # IFLA_INFO_DATA (a bridge's options)

    @property
    def up(self) -> bool:
        return bool(self.flags & _IFF_UP)

    @property
    def running(self) -> bool:
        """Up with a carrier: the bridge forwards through it."""
        return bool(self.flags & _IFF_UP and self.flags & _IFF_LOWER_UP)


def read_links() -> dict[str, Link]:
    """Every interface of this network namespace by name (OSError, NetlinkError fail)."""
    from pyroute2 import IPRoute

    out: dict[str, Link] = {}
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            info = msg.get("IFLA_LINKINFO")
            data = info.get("IFLA_INFO_DATA") if info else None
            link = Link(index=msg["index"], name=msg.get("IFLA_IFNAME"),
                        kind=info.get("IFLA_INFO_KIND") if info else None,
                        flags=msg["flags"], mtu=int(msg.get("IFLA_MTU") or 0),
                        master=msg.get("IFLA_MASTER"),
                        data=dict(data["attrs"]) if data and "attrs" in data else {})
            out[link.name] = link
    return out


@dataclass
class Host:
    """What is read once per check of a namespace, whatever the number of bridges."""

    _bridge_nf: dict[str, bool] | str | None = None
    _ruleset: Ruleset | str | None = None
    links: dict[str, Link] = field(default_factory=dict)

    def bridge_nf(self) -> dict[str, bool] | str:
        """{iptables: on, ...} of the bridge-nf-call sysctls, {} without br_netfilter
        (then bridged frames never meet the firewall), or why they cannot be read."""
        if self._bridge_nf is None:
            self._bridge_nf = _read_bridge_nf()
        return self._bridge_nf

    def ruleset(self) -> Ruleset | str:
        """The firewall's rules, or why they cannot be read."""
        if self._ruleset is None:
            try:
                self._ruleset = read_ruleset()
            except FirewallUnreadable as exc:
                self._ruleset = str(exc)
        return self._ruleset


def _read_bridge_nf() -> dict[str, bool] | str:
    if not os.path.isdir("/proc/sys/net"):
        # Without /proc/sys, a missing net/bridge says nothing about br_netfilter.
        return "/proc/sys/net is not visible here (a sandbox: systemd's ProcSubset=pid)"
    values: dict[str, bool] = {}
    for name, _, _ in _NF_CALLS:
        path = f"{_BRIDGE_NF}/bridge-nf-call-{name}"
        try:
            with open(path) as file:
                values[name] = file.read().strip() != "0"
        except FileNotFoundError:
            if not os.path.isdir(_BRIDGE_NF):
                return {}   # br_netfilter is not loaded: nothing calls the firewall
            return f"{path} is missing"
        except OSError as exc:
            return f"{path}: {exc.strerror}"
    return values


def _check_nf_calls(bridge: Link, host: Host) -> tuple[list[Finding], set[str]]:
    """Findings on bridge-nf-call for bridge, and the firewall families its frames meet."""
    state = host.bridge_nf()
    if isinstance(state, str):
        return [_unchecked(bridge.name, "net.bridge.bridge-nf-call-*", state)], set()
    findings: list[Finding] = []
    families: set[str] = set()
    if not state:
        return findings, families
    for name, frames, option in _NF_CALLS:
        sysctl = f"net.bridge.bridge-nf-call-{name}"
        if state.get(name):
            findings.append(Finding(
                bridge.name, f"{sysctl} = 1: bridged {frames} frames pass the host "
                             f"firewall", f"sysctl -w {sysctl}=0"))
        elif bridge.data.get(option):
            findings.append(Finding(
                bridge.name, f"bridge option nf_call_{name} is on: bridged {frames} frames "
                             f"pass the host firewall",
                f"ip link set {bridge.name} type bridge nf_call_{name} 0"))
        else:
            continue
        families |= _FAMILIES.get(name, set())
    return findings, families


def _check_firewall(bridge: Link, ports: Sequence[Link], host: Host,
                    families: set[str]) -> list[Finding]:
    """Findings on forward chains and rules that drop the bridge's frames."""
    # The bridge family sees bridged frames whatever br_netfilter does; only nft (or
    # ebtables, which is not read) can hold such rules.
    families = families | {"bridge"}
    if families == {"bridge"} and not nft_available():
        return []
    rules = host.ruleset()
    if isinstance(rules, str):
        return [_unchecked(bridge.name, "the firewall's forward rules", rules)]
    return [_block_finding(bridge.name, b)
            for b in blocks(rules, bridge.name, (p.name for p in ports), families)]


def _block_finding(bridge: str, block: Block) -> Finding:
    """The line for one place in the firewall that drops (or may drop) bridged frames."""
    table = block.table
    program = table.reader.removesuffix("-save")
    frames = _FRAMES.get(table.family, f"frames crossing {bridge}")
    if block.rule is None:
        if table.reader == "nft":
            chain = f"{table.family} {table.name} {block.chain}"
            match = (f'meta ibrname "{bridge}"' if table.family == "bridge"
                     else f'iifname "{bridge}" oifname "{bridge}"')
            fix = f"nft insert rule {chain} {match} accept"
            where = f"nft chain `{chain}`"
        else:
            fix = f"{program} -t {table.name} -I {block.chain} -i {bridge} -o {bridge} -j ACCEPT"
            where = f"{program} chain {block.chain} (table {table.name})"
        return Finding(bridge, f"{where} has policy drop and no rule before it accepts "
                               f"{frames}", fix)
    verb = "drops" if block.certain else "may drop"
    return Finding(bridge, f"{program} {block.rule.where} {verb} {frames}",
                   f"{block.rule.delete}, or accept {bridge}'s frames before it")


def _check_links(bridge: Link, ports: Sequence[Link], tap: Link | None,
                 max_frame: int) -> list[Finding]:
    """Findings on the bridge's state, its ports and the MTUs."""
    name = bridge.name
    findings: list[Finding] = []
    if not bridge.up:
        findings.append(Finding(name, "the bridge is down: it forwards nothing",
                                f"ip link set {name} up"))
    if not ports:
        findings.append(Finding(name, "the bridge has no ports: frames have nowhere to go",
                                f"attach an interface (ip link set IFACE master {name})"))
    elif not any(p.running for p in ports):
        states = ", ".join(f"{p.name} {'no carrier' if p.up else 'down'}" for p in ports)
        findings.append(Finding(name, f"no port of the bridge is up ({states}): frames "
                                      f"have nowhere to go",
                                "ip link set PORT up, and start what is behind it"))
    for port in ports:
        if port.mtu != bridge.mtu:
            findings.append(Finding(
                name, f"port {port.name} has MTU {port.mtu}, the bridge {bridge.mtu}: frames "
                      f"longer than the smaller are dropped",
                f"ip link set {port.name} mtu {bridge.mtu}"))
    vlan = bool(bridge.data.get("IFLA_BR_VLAN_FILTERING"))
    findings += _check_max_frame(name, max(bridge.mtu, tap.mtu if tap else 0), max_frame, vlan)
    return findings


def _check_max_frame(where: str, mtu: int, max_frame: int, vlan: bool) -> list[Finding]:
    """A finding if frames of a full MTU are longer than max_frame."""
    need = mtu + ETH_HLEN + (VLAN_HLEN if vlan else 0)
    if max_frame >= need:
        return []
    header = "Ethernet header and VLAN tag" if vlan else "Ethernet header"
    return [Finding(where, f"--max-frame {max_frame} is less than MTU {mtu} + "
                           f"{need - mtu} ({header}): full-size frames are dropped",
                    f"--max-frame {need} (max_frame = {need} in the config), or a smaller MTU")]


def _check_bridge(name: str, host: Host, max_frame: int, tap: str | None = None) -> list[Finding]:
    """Every check of one bridge (tap: the port of ours, when a target started)."""
    bridge = host.links.get(name)
    if bridge is None:
        return [Finding(name, "no such interface in this network namespace",
                        f"ip link add {name} type bridge, or name an existing bridge")]
    if bridge.kind != "bridge":
        return [Finding(name, f"not a bridge (it is a {bridge.kind or 'plain device'})",
                        "name a bridge")]
    ports = [p for p in host.links.values() if p.master == bridge.index]
    findings = _check_links(bridge, ports, host.links.get(tap) if tap else None, max_frame)
    nf_findings, families = _check_nf_calls(bridge, host)
    return findings + nf_findings + _check_firewall(bridge, ports, host, families)


def _read_host() -> Host | str:
    """A Host with the namespace's links, or why the links cannot be read."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return Host(links=read_links())
    except NetlinkError as exc:
        return f"netlink: {os.strerror(exc.code)}"
    except OSError as exc:
        return f"netlink: {exc.strerror or exc}"


def check_bridges(names: Sequence[str] = (), *,
                  max_frame: int = FRAME_MAX_LEN) -> dict[str, list[Finding]]:
    """Findings for each bridge named (none: every bridge of this namespace).

    RelayError when the interfaces cannot be read at all: then nothing was checked.
    """
    host = _read_host()
    if isinstance(host, str):
        raise RelayError(f"doctor: cannot read the interfaces ({host})")
    if not names:
        names = sorted(n for n, link in host.links.items() if link.kind == "bridge")
    return {name: _check_bridge(name, host, max_frame) for name in names}


def check_port(tap: str, *, max_frame: int = FRAME_MAX_LEN) -> list[Finding]:
    """Findings for a tap of ours: its bridge's checks, or just its MTU when it has none."""
    host = _read_host()
    if isinstance(host, str):
        return [_unchecked(tap, "the interfaces", host)]
    link = host.links.get(tap)
    if link is None:
        return [_unchecked(tap, "the tap", os.strerror(errno.ENODEV))]
    by_index = {ln.index: ln for ln in host.links.values()}
    master = by_index.get(link.master) if link.master is not None else None
    if master is None or master.kind != "bridge":
        return _check_max_frame(tap, link.mtu, max_frame, vlan=False)
    return _check_bridge(master.name, host, max_frame, tap=tap)


async def warn_port(tap: str, max_frame: int) -> None:
    """Run check_port in a worker thread; log problems as warnings, the rest as info.

    A check not made is only info: an unprivileged user's tap cannot read the firewall,
    and would be told so at every start.
    """
    try:
        findings = await asyncio.to_thread(check_port, tap, max_frame=max_frame)
    except Exception as exc:  # noqa: BLE001 (a check must never stop a target that works)
        log.warning("%s: bridge checks failed: %s", tap, exc)
        return
    for finding in findings:
        if finding.problem:
            log.warning("%s", finding)
        else:
            log.info("%s", finding)
    log.debug("%s: bridge checks done, %d problem(s)", tap, sum(f.problem for f in findings))

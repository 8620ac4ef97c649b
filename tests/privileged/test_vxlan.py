"""VXLAN against the Linux kernel's vxlan device: fastrelay switches and kernel VTEPs in netns.

The underlay is a veth pair between relay_ns (fastrelay's side, 10.99.0.1, and 10.99.0.3
for a second fastrelay) and a namespace `k` (the kernel VTEP, 10.99.0.2). The kernel side
is built with the README's commands, word for word: `ip link add vxlan0 type vxlan id 42
dstport 4789 local A dev eth0`, `bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst B`
(head-end replication to each fastrelay), vxlan0 enslaved to a bridge with a test host
behind it. Learning stays on (the default), so the kernel's FDB shows which MACs it
learned behind which remote VTEP. fastrelay's side is a switch with a bridge target
(a test host behind it) and a `vxlan:` endpoint.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from privileged.netns import REPO, Lab, wait_for

pytestmark = pytest.mark.privileged

VNI = 42
FRAMES = str(Path(__file__).with_name("frames.py"))
FR1, KERNEL, FR2 = "10.99.0.1", "10.99.0.2", "10.99.0.3"
FR1_6, KERNEL_6 = "fd99::1", "fd99::2"   # the IPv6 underlay
STRANGER = "10.99.0.9"   # on the kernel's side of the underlay, never a configured peer
A4, B4, C4 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
A6, B6, C6 = "2001:db8::1", "2001:db8::2", "2001:db8::3"


def sh(lab: Lab, ns: str, *commands: str) -> None:
    """Run each shell-quoted command in ns (the README's commands); fail with its output."""
    for command in commands:
        result = lab.run(ns, shlex.split(command))
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def underlay(lab: Lab, kernel_ns: str, fastrelay_addrs: list[str], mtu: int,
             kernel_addrs: tuple[str, ...] = (KERNEL, STRANGER)) -> None:
    """A veth pair: `ul0` in relay_ns with fastrelay_addrs, `eth0` in kernel_ns with
    kernel_addrs (by default KERNEL, and STRANGER, which only the raw sender uses); both at
    mtu. IPv4 addresses are /24, IPv6 ones /64 without duplicate address detection."""
    def add(ipr: IPRoute, index: int, addr: str) -> None:
        if ":" in addr:
            ipr.addr("add", index=index, address=addr, prefixlen=64, flags=0x02)  # NODAD
        else:
            ipr.addr("add", index=index, address=addr, prefixlen=24)

    with IPRoute(netns=lab.relay_ns) as ipr:
        ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": kernel_ns})
        index = ipr.link_lookup(ifname="ul0")[0]
        ipr.link("set", index=index, mtu=mtu, state="up")
        for addr in fastrelay_addrs:
            add(ipr, index, addr)
    with IPRoute(netns=kernel_ns) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=index, mtu=mtu, state="up")
        for addr in kernel_addrs:
            add(ipr, index, addr)
    # `ethtool -K eth0 tx off` on the kernel VTEP's side: a veth hands its packets over
    # with checksums still to be filled in (CHECKSUM_PARTIAL), and a VXLAN packet's partial
    # checksum is the inner TCP/UDP one. fastrelay reads the UDP payload as it is, so the
    # inner frame would reach host a with a bad TCP checksum; a real NIC fills it in (or
    # the kernel does, for a NIC without offloads), which this emulates.
    result = lab.run(kernel_ns, [sys.executable, "-c", _TX_CSUM_OFF])
    assert result.returncode == 0, result.stderr


_TX_CSUM_OFF = """
from pyroute2.ethtool import Ethtool
ethtool = Ethtool()
features = ethtool.get_features("eth0")
features.features["tx-checksum-ip-generic"].enable = False
ethtool.set_features("eth0", features)
assert not ethtool.get_features("eth0").features["tx-checksum-ip-generic"].enable
"""


def kernel_vtep(lab: Lab, ns: str, remotes: list[str], vni: int = VNI,
                local: str = KERNEL) -> None:
    """vxlan0 (dstport 4789, learning on) in a bridge br0 of ns, flooding to remotes."""
    sh(lab, ns,
       f"ip link add vxlan0 type vxlan id {vni} dstport 4789 local {local} dev eth0",
       *(f"bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst {r}" for r in remotes),
       "ip link add br0 type bridge",
       "ip link set vxlan0 master br0",
       "ip link set vxlan0 up",
       "ip link set br0 up")


def mac_of(ns: str, ifname: str = "eth0") -> str:
    """The MAC address of ifname in ns."""
    with IPRoute(netns=ns) as ipr:
        return str(ipr.get_links(ifname=ifname)[0].get("IFLA_ADDRESS"))


def started(lab: Lab, proc: subprocess.Popen[bytes], *bridges: str) -> None:
    """Wait until proc has a tap up in each bridge (or fail with its stderr)."""
    def ready() -> bool:
        if proc.poll() is not None:
            _, err = lab.stop(proc)
            raise AssertionError(f"relay exited {proc.returncode}: {err}")
        return all(lab.bridge_taps(b) for b in bridges)
    wait_for(f"taps in {bridges}", ready)


class Sniffer:
    """frames.py sniff on eth0 of a test host: counts tagged frames by tag."""

    def __init__(self, lab: Lab, ns: str, seconds: float) -> None:
        self.proc = lab.popen(ns, [sys.executable, FRAMES, "sniff", "eth0", f"{seconds:g}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == b"ready\n", line

    def counts(self) -> dict[str, int]:
        """{tag: frames} once the sniffer's time is up."""
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, out
        return dict(json.loads(out))


def frames(lab: Lab, ns: str, *args: str) -> None:
    """Run frames.py ARGS in ns (send or vxlan)."""
    result = lab.run(ns, [sys.executable, FRAMES, *args])
    assert result.returncode == 0, result.stderr


# The forms fastrelay can take around a vxlan: endpoint: the switch (the real use), a hub
# and point to point (both flood every frame to every remote VTEP: here the one).
FORMS = {"switch": ["--switch", "-l", "127.0.0.1:5500"], "hub": ["-l", "127.0.0.1:5500"],
         "point-to-point": []}


@pytest.mark.parametrize("form", FORMS)
def test_kernel_vtep_and_fastrelay_ping_at_mtu_1500_and_kernel_learns(
        lab: Lab, form: str) -> None:
    hk = lab.namespace("k")
    # 1500-byte inner frames need 1550 bytes of underlay (IPv4 + UDP + VXLAN + Ethernet).
    underlay(lab, hk, [FR1], mtu=1550)
    lab.bridge("brF")
    ha = lab.host("a", "brF", A4, A6)
    kernel_vtep(lab, hk, [FR1])
    hb = lab.host("b", "br0", B4, B6, bridge_ns=hk)
    relay = lab.relay(*FORMS[form], "brF", f"vxlan:{VNI}:4789:{KERNEL}:4789")
    started(lab, relay, "brF")

    # 1472 bytes of ICMP payload + 28 = 1500 bytes of IPv4, don't-fragment: whole frames.
    lab.ping_until(ha, B4, size=1472, fragment=False)
    lab.ping_until(hb, A4, size=1472, fragment=False)
    lab.ping_until(hb, A6, size=1452, fragment=False)   # 1452 + 48 = 1500 bytes of IPv6

    # The kernel learned host a's MAC behind fastrelay's address.
    fdb = lab.run(hk, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    assert f"{mac_of(ha)} dst {FR1} " in fdb, fdb
    status, err = lab.stop(relay)
    assert status == 0, err


_SINK = """
import hashlib, socket, sys
ls = socket.create_server(("0.0.0.0", 7000))
ls.settimeout(20)
print("ready", flush=True)
c, _ = ls.accept()
c.settimeout(20)
h = hashlib.sha256()
while chunk := c.recv(1 << 20):
    h.update(chunk)
print(h.hexdigest())
"""
_SOURCE = """
import hashlib, os, socket, sys
data = os.urandom(1 << 20) * 16
s = socket.create_connection((sys.argv[1], 7000), timeout=20)
s.sendall(data)
s.close()
print(hashlib.sha256(data).hexdigest())
"""


def test_tcp_bulk_through_the_kernel_vtep_is_intact_both_ways(lab: Lab) -> None:
    """16 MiB of TCP each way between a host behind fastrelay and one behind the kernel VTEP:
    full-size frames in bursts, which fastrelay sends as GSO runs of [header][frame]
    segments; the kernel must take every segment as a VXLAN packet of its own."""
    hk = lab.namespace("k")
    underlay(lab, hk, [FR1], mtu=1550)
    lab.bridge("brF")
    ha = lab.host("a", "brF", A4, A6)
    kernel_vtep(lab, hk, [FR1])
    hb = lab.host("b", "br0", B4, B6, bridge_ns=hk)
    relay = lab.relay("--switch", "-l", "127.0.0.1:5500", "brF",
                      f"vxlan:{VNI}:4789:{KERNEL}:4789")
    started(lab, relay, "brF")
    lab.ping_until(ha, B4)
    for sender, receiver, address in ((ha, hb, B4), (hb, ha, A4)):
        sink = lab.popen(receiver, [sys.executable, "-c", _SINK], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        assert sink.stdout is not None and sink.stdout.readline() == b"ready\n"
        sent = lab.run(sender, [sys.executable, "-c", _SOURCE, address], timeout=60)
        assert sent.returncode == 0, sent.stderr
        out, _ = sink.communicate(timeout=30)
        assert out.decode().strip() == sent.stdout.strip(), (sender, receiver)
    status, err = lab.stop(relay)
    assert status == 0, err


@pytest.mark.parametrize("path_mtu", [1570, 1569])
def test_ipv6_underlay_needs_70_bytes_and_never_fragments(lab: Lab, path_mtu: int) -> None:
    """Over an IPv6 underlay, 1500 bytes of inner IP need a path MTU of 1570 (IPv6 40, UDP
    8, VXLAN 8, inner Ethernet 14). One byte less and they must not pass: fastrelay would
    have to fragment them (the kernel VTEP would reassemble), and it must not."""
    hk = lab.namespace("k")
    underlay(lab, hk, [FR1_6], mtu=path_mtu, kernel_addrs=(KERNEL_6,))
    lab.bridge("brF")
    ha = lab.host("a", "brF", A4, A6)
    kernel_vtep(lab, hk, [FR1_6], local=KERNEL_6)
    hb = lab.host("b", "br0", B4, B6, bridge_ns=hk)
    relay = lab.relay("--switch", "-l", "127.0.0.1:5500", "brF",
                      f"vxlan:{VNI}:4789:[{KERNEL_6}]:4789")
    started(lab, relay, "brF")
    lab.ping_until(ha, B4, size=1400, fragment=False)
    fdb = lab.run(hk, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    assert f"{mac_of(ha)} dst {FR1_6} " in fdb, fdb
    if path_mtu >= 1570:
        lab.ping_until(ha, B4, size=1472, fragment=False)
        lab.ping_until(hb, A4, size=1472, fragment=False)
    else:
        big = lab.ping(ha, B4, size=1472, count=2, fragment=False, deadline=3)
        assert big.returncode != 0, big.stdout
    status, err = lab.stop(relay)
    assert status == 0, err


def stats_of_vxlan(control: Path) -> dict[str, Any]:
    """The vxlan endpoint's counters, from `fastrelay stats --json` of the daemon."""
    res = subprocess.run([sys.executable, "-m", "fastrelay", "stats", "--json", "--control",
                          str(control)], cwd=REPO, capture_output=True, text=True, timeout=30,
                         check=False)
    assert res.returncode == 0, res.stderr
    (link,) = json.loads(res.stdout)["links"]
    (endpoint,) = [e for e in link["endpoints"] if e["endpoint"].startswith("vxlan:")]
    return dict(endpoint["vxlan"])


def test_wrong_vni_foreign_and_oversized_frames_are_dropped_and_counted(
        lab: Lab, tmp_path: Path) -> None:
    """Underlay MTU 1500: inner frames up to 1450 bytes of IP pass, bigger ones are dropped
    (DF, never fragmented) and counted. Wrong VNI (a second kernel vxlan, a raw sender),
    a clear I flag and a foreign source are dropped and counted; reserved bits are not
    looked at."""
    hk = lab.namespace("k")
    underlay(lab, hk, [FR1], mtu=1500)
    lab.bridge("brF")
    ha = lab.host("a", "brF", A4, A6)
    kernel_vtep(lab, hk, [FR1])
    hb = lab.host("b", "br0", B4, B6, bridge_ns=hk)
    # A second kernel VTEP on the same port with another VNI, also flooding to fastrelay.
    sh(lab, hk,
       "ip link add vxlan1 type vxlan id 43 dstport 4789 local 10.99.0.2 dev eth0",
       f"bridge fdb append 00:00:00:00:00:00 dev vxlan1 dst {FR1}",
       "ip addr add 198.51.100.2/24 dev vxlan1",
       "ip link set vxlan1 up")
    control = tmp_path / "control.sock"
    config = tmp_path / "vxlan.toml"
    # The config's table form of the endpoint (the same as "vxlan:42:4789:10.99.0.2:4789").
    config.write_text(f'[daemon]\ncontrol = "{control}"\n\n[hub.overlay]\nmode = "switch"\n'
                      f'endpoints = ["brF", {{ vxlan = {VNI}, port = 4789, '
                      f'peers = ["{KERNEL}:4789"] }}]\n')
    relay = lab.relay("--config", str(config))
    started(lab, relay, "brF")
    wait_for("the control socket", control.exists)

    lab.ping_until(ha, B4, size=1422, fragment=False)    # 1450 bytes of IPv4: fits
    before = stats_of_vxlan(control)
    big = lab.ping(ha, B4, size=1472, count=2, fragment=False, deadline=3)
    assert big.returncode != 0, big.stdout                # 1500 bytes: cannot pass
    after = stats_of_vxlan(control)
    assert after["drop_mtu"] >= before["drop_mtu"] + 2, (before, after)

    sniffer = Sniffer(lab, ha, seconds=4)
    # ARP for 198.51.100.1 floods through vxlan1, with VNI 43.
    lab.ping(hk, "198.51.100.1", count=2, deadline=2)
    frames(lab, hk, "vxlan", KERNEL, FR1, "4789", "0x08", "43", "vni43")
    frames(lab, hk, "vxlan", KERNEL, FR1, "4789", "0x00", str(VNI), "no-i-flag")
    frames(lab, hk, "vxlan", STRANGER, FR1, "4789", "0x08", str(VNI), "foreign")
    frames(lab, hk, "vxlan", KERNEL, FR1, "4789", "0x8f", str(VNI), "reserved-bits")
    frames(lab, hk, "vxlan", KERNEL, FR1, "4789", "0x08", str(VNI), "good")
    seen = sniffer.counts()
    assert seen == {"reserved-bits": 1, "good": 1}, seen
    last = stats_of_vxlan(control)
    assert last["drop_vni"] >= after["drop_vni"] + 3, (after, last)   # ARP, vni43, no-i-flag
    assert last["drop_foreign"] == after["drop_foreign"] + 1, (after, last)
    lab.ping_until(hb, A4)                                # and the overlay still works
    status, err = lab.stop(relay)
    assert status == 0, err


@pytest.mark.parametrize("form", ["switch", "hub"])
def test_two_fastrelays_and_a_kernel_vtep_each_broadcast_reaches_every_site_once(
        lab: Lab, form: str) -> None:
    """Sites a and c are fastrelay switches (both in relay_ns, bound to 10.99.0.1 and
    10.99.0.3), site b the kernel VTEP. Each site floods to both others (head-end
    replication); what arrives through VXLAN never goes back into it (split horizon), so
    a broadcast from any site reaches each other site exactly once. As hubs, which send
    every frame to every remote VTEP, the same holds."""
    hk = lab.namespace("k")
    underlay(lab, hk, [FR1, FR2], mtu=1550)
    lab.bridge("brA")
    lab.bridge("brC")
    ha = lab.host("a", "brA", A4, A6)
    hc = lab.host("c", "brC", C4, C6)
    kernel_vtep(lab, hk, [FR1, FR2])
    hb = lab.host("b", "br0", B4, B6, bridge_ns=hk)
    mode = ["--switch"] if form == "switch" else []
    first = lab.relay("--bind", FR1, *mode, "-l", "127.0.0.1:5501", "brA",
                      f"vxlan:{VNI}:4789:{KERNEL}:4789,peer={FR2}:4789")
    second = lab.relay("--bind", FR2, *mode, "-l", "127.0.0.1:5502", "brC",
                       f"vxlan:{VNI}:4789:{KERNEL}:4789,peer={FR1}:4789")
    started(lab, first, "brA")
    started(lab, second, "brC")

    # Unicast between every pair of sites, at a full 1500-byte MTU.
    for src, dst in ((ha, B4), (ha, C4), (hb, C4)):
        lab.ping_until(src, dst, size=1472, fragment=False)
    # The kernel learned each fastrelay site's host behind that site's own address.
    fdb = lab.run(hk, ["bridge", "fdb", "show", "dev", "vxlan0"]).stdout
    assert f"{mac_of(ha)} dst {FR1} " in fdb and f"{mac_of(hc)} dst {FR2} " in fdb, fdb

    hosts = {"a": ha, "b": hb, "c": hc}
    sniffers = {name: Sniffer(lab, ns, seconds=3) for name, ns in hosts.items()}
    for name, ns in hosts.items():
        frames(lab, ns, "send", "eth0", f"from-{name}")
    time.sleep(0.5)
    seen = {name: s.counts() for name, s in sniffers.items()}
    assert seen == {name: {f"from-{other}": 1 for other in hosts if other != name}
                    for name in hosts}, seen
    for proc in (first, second):
        status, err = lab.stop(proc)
        assert status == 0, err

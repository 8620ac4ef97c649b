"""The doctor's link checks on links as netlink reports them (no root; the rest is in privileged/).

This kernel may lack VLAN filtering, so the VLAN case of --max-frame is checked here on
the attributes a VLAN-filtering bridge reports.
"""

from __future__ import annotations

from fastrelay.doctor import Finding, Link, _check_links

UP_RUNNING = 0x1 | 0x10000


def link(index: int, name: str, mtu: int = 1500, master: int | None = None,
         vlan: int = 0) -> Link:
    kind = "bridge" if master is None else "tun"
    return Link(index, name, kind, UP_RUNNING, mtu, master,
                {"IFLA_BR_VLAN_FILTERING": vlan} if kind == "bridge" else {})


def test_max_frame_counts_the_vlan_tag_on_a_vlan_filtering_bridge() -> None:
    port = link(3, "tap0", master=2)
    assert _check_links(link(2, "br0"), [port], port, 1514) == []
    (finding,) = _check_links(link(2, "br0", vlan=1), [port], port, 1514)
    assert str(finding) == (
        "br0: --max-frame 1514 is less than MTU 1500 + 18 (Ethernet header and VLAN tag): "
        "full-size frames are dropped; fix: --max-frame 1518 (max_frame = 1518 in the "
        "config), or a smaller MTU")
    assert finding.problem
    assert _check_links(link(2, "br0", vlan=1), [port], port, 1518) == []


def test_max_frame_follows_the_larger_of_bridge_and_tap() -> None:
    bridge = link(2, "br0", mtu=1500)
    tap = link(3, "tap0", mtu=9000, master=2)
    findings = [str(f) for f in _check_links(bridge, [tap], tap, 1514)]
    assert findings == [
        ("br0: port tap0 has MTU 9000, the bridge 1500: frames longer than the smaller are "
         "dropped; fix: ip link set tap0 mtu 1500"),
        ("br0: --max-frame 1514 is less than MTU 9000 + 14 (Ethernet header): full-size frames "
         "are dropped; fix: --max-frame 9014 (max_frame = 9014 in the config), or a smaller MTU")]


def test_a_check_not_made_is_no_problem() -> None:
    finding = Finding("br0", "could not check X: why", problem=False)
    assert str(finding) == "br0: could not check X: why"
    assert not finding.problem

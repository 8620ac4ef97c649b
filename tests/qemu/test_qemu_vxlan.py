"""Two real guests, each on its own fastrelay switch; the two switches are joined only by VXLAN.

Guest a is on switch A, guest b on switch B (both `-netdev socket,connect=` to their own
switch's listener). The switches have no link but a `vxlan:` endpoint each, over
127.0.0.1 with different local ports, so every frame between the guests crosses the
overlay: ARP floods from a switch to its one remote VTEP, the replies and the pings go
as unicast to the VTEP each MAC was learned behind. Pings of 1472 bytes make 1514-byte
frames: a full 1500-byte MTU through the tunnel (loopback's MTU leaves room for the
50 bytes of outer headers).
"""

from __future__ import annotations

import os

import pytest

from .harness import expect_clean_pings, free_port, nd_socket_connect, ping_env

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("fastrelay_cli")]

COUNT = 5
VNI = 4242
SERVE = {"fr_action": "serve"}


def test_guests_on_two_switches_joined_only_by_vxlan(lab):
    if os.environ.get("FASTRELAY_QEMU_RELAY"):
        pytest.skip("another relay has no vxlan: target")
    pa, pb = free_port(), free_port()
    va, vb = free_port("udp"), free_port("udp")
    switch_a = lab.relay("--switch", "-l", f"127.0.0.1:{pa}",
                         f"vxlan:{VNI}:{va}:127.0.0.1:{vb}", name="switch-a")
    switch_b = lab.relay("--switch", "-l", f"127.0.0.1:{pb}",
                         f"vxlan:{VNI}:{vb}:127.0.0.1:{va}", name="switch-b")
    for switch, tcp, udp in ((switch_a, pa, va), (switch_b, pb, vb)):
        switch.wait_listening(tcp)
        switch.wait_listening(udp, "udp")
    b = lab.guest("b", nd_socket_connect(pb), env=SERVE)
    a = lab.guest("a", nd_socket_connect(pa), env=ping_env([b], count=COUNT, size=1472))
    expect_clean_pings(a, [b], COUNT, timeout=60)
    assert switch_a.alive() and switch_b.alive(), switch_a.tail() + switch_b.tail()

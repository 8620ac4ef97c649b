"""Sanity: two guests linked directly by qemu (no relay) ping each other with 0% loss."""

from __future__ import annotations

import pytest

from .harness import (
    expect_clean_pings,
    free_port,
    nd_socket_connect,
    nd_socket_listen,
    nd_socket_udp,
    ping_env,
    port_listening,
    wait_until,
)

pytestmark = pytest.mark.qemu

COUNT = 5


def test_direct_socket_udp(lab):
    pa, pb = free_port("udp"), free_port("udp")
    b = lab.guest("b", nd_socket_udp(send_port=pa, local_port=pb), env={"fr_action": "serve"})
    a = lab.guest("a", nd_socket_udp(send_port=pb, local_port=pa), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_direct_socket_listen_connect(lab):
    port = free_port()
    b = lab.guest("b", nd_socket_listen(port), env={"fr_action": "serve"})
    # qemu opens listen= before the guest boots; connect= tries once, so wait for it.
    wait_until(lambda: port_listening(port, "tcp"), 15, f"qemu listen= on {port}", b.tail)
    a = lab.guest("a", nd_socket_connect(port), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)

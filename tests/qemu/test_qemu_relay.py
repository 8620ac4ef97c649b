"""Guest-to-guest pings through fastrelay, once for every way qemu can attach to it."""

from __future__ import annotations

import pytest

from .harness import (
    expect_clean_pings,
    free_port,
    nd_dgram_inet,
    nd_dgram_unix,
    nd_socket_connect,
    nd_socket_listen,
    nd_socket_udp,
    nd_stream_inet,
    nd_stream_inet_server,
    nd_stream_unix,
    ping_env,
    port_listening,
    wait_until,
)

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("fastrelay_cli")]

COUNT = 5
SERVE = {"fr_action": "serve"}


def udp_pair() -> tuple[int, int]:
    """(relay port qemu sends to, guest port the relay sends to)."""
    return free_port("udp"), free_port("udp")


def test_relay_udp_p2p(lab):
    # qemu socket,udp= <-> fastrelay SPORT:127.0.0.1:GPORT on both sides.
    (ra, ga), (rb, gb) = udp_pair(), udp_pair()
    relay = lab.relay(f"{ra}:127.0.0.1:{ga}", f"{rb}:127.0.0.1:{gb}")
    relay.wait_listening(ra, "udp")
    relay.wait_listening(rb, "udp")
    b = lab.guest("b", nd_socket_udp(send_port=rb, local_port=gb), env=SERVE)
    a = lab.guest("a", nd_socket_udp(send_port=ra, local_port=ga), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_relay_tcp_hub_three_socket_connect_guests(lab):
    # The relay must listen before qemu's connect=, which tries exactly once.
    port = free_port()
    relay = lab.relay("-l", port)
    relay.wait_listening(port)
    b = lab.guest("b", nd_socket_connect(port), env=SERVE)
    c = lab.guest("c", nd_socket_connect(port), env=SERVE)
    a = lab.guest("a", nd_socket_connect(port), env=ping_env([b, c], count=COUNT))
    expect_clean_pings(a, [b, c], COUNT, timeout=60)


def test_relay_p2p_connects_to_socket_listen_guests(lab):
    p1, p2 = free_port(), free_port()
    b = lab.guest("b", nd_socket_listen(p1), env=SERVE)
    a = lab.guest("a", nd_socket_listen(p2), env=ping_env([b], count=COUNT))
    wait_until(
        lambda: port_listening(p1, "tcp") and port_listening(p2, "tcp"),
        15,
        "qemu listen= sockets",
        lab.diagnostics,
    )
    lab.relay(f"127.0.0.1:{p1}", f"127.0.0.1:{p2}")
    expect_clean_pings(a, [b], COUNT)


def test_relay_hub_stream_inet(lab):
    port = free_port()
    relay = lab.relay("-l", port)
    relay.wait_listening(port)
    b = lab.guest("b", nd_stream_inet(port), env=SERVE)
    a = lab.guest("a", nd_stream_inet(port), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_relay_hub_ipv6_listener_and_client_target(lab):
    # netrelay fails IPv6 client targets; qemu's stream accepts ::1 (socket/dgram do not).
    # Guest b listens on [::1]:P2 and the hub connects to it; guest a joins the hub over ::1.
    port, p2 = free_port(), free_port()
    b = lab.guest("b", nd_stream_inet_server(p2, host="::1"), env=SERVE)
    wait_until(lambda: port_listening(p2, "tcp"), 15, "qemu stream server on ::1", b.tail)
    relay = lab.relay("-l", port, f"[::1]:{p2}")
    relay.wait_listening(port)
    a = lab.guest("a", nd_stream_inet(port, host="::1"), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_relay_hub_stream_unix(lab, tmp_path):
    # Guest a comes in over a unix stream socket, guest b over the hub's TCP port.
    port, path = free_port(), tmp_path / "hub.sock"
    relay = lab.relay("-l", port, f"unix-listen:{path}")
    relay.wait_listening(port)
    relay.wait_path(path)
    b = lab.guest("b", nd_stream_inet(port), env=SERVE)
    a = lab.guest("a", nd_stream_unix(path), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_relay_dgram_inet(lab):
    # qemu dgram local=G remote=R <-> fastrelay R:127.0.0.1:G.
    (ra, ga), (rb, gb) = udp_pair(), udp_pair()
    relay = lab.relay(f"{ra}:127.0.0.1:{ga}", f"{rb}:127.0.0.1:{gb}")
    relay.wait_listening(ra, "udp")
    relay.wait_listening(rb, "udp")
    b = lab.guest("b", nd_dgram_inet(local_port=gb, remote_port=rb), env=SERVE)
    a = lab.guest("a", nd_dgram_inet(local_port=ga, remote_port=ra), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_relay_dgram_unix(lab, tmp_path):
    # qemu dgram unix local.path=G remote.path=R <-> fastrelay unixgram:R:G.
    ra, ga, rb, gb = (tmp_path / n for n in ("ra.sock", "ga.sock", "rb.sock", "gb.sock"))
    relay = lab.relay(f"unixgram:{ra}:{ga}", f"unixgram:{rb}:{gb}")
    relay.wait_path(ra)
    relay.wait_path(rb)
    b = lab.guest("b", nd_dgram_unix(local=gb, remote=rb), env=SERVE)
    a = lab.guest("a", nd_dgram_unix(local=ga, remote=ra), env=ping_env([b], count=COUNT))
    expect_clean_pings(a, [b], COUNT)


def test_relay_mixed_hub_udp_and_tcp_guests(lab):
    # One guest on a UDP target of the hub, two on its TCP listener; a (UDP) pings both.
    port = free_port()
    ra, ga = udp_pair()
    relay = lab.relay("-l", port, f"{ra}:127.0.0.1:{ga}")
    relay.wait_listening(port)
    relay.wait_listening(ra, "udp")
    b = lab.guest("b", nd_socket_connect(port), env=SERVE)
    c = lab.guest("c", nd_socket_connect(port), env=SERVE)
    a = lab.guest(
        "a", nd_socket_udp(send_port=ra, local_port=ga), env=ping_env([b, c], count=COUNT)
    )
    expect_clean_pings(a, [b, c], COUNT, timeout=60)


@pytest.mark.parametrize("mode", ["tcp-hub", "udp-p2p"])
def test_relay_jumbo_mtu_9000(lab, mode):
    # 8000-byte pings with MTU 9000: 8042-byte frames, unfragmented, must cross intact.
    env = {"fr_mtu": 9000}
    if mode == "tcp-hub":
        port = free_port()
        relay = lab.relay("-l", port)
        relay.wait_listening(port)
        nd_a = nd_b = nd_socket_connect(port)
    else:
        (ra, ga), (rb, gb) = udp_pair(), udp_pair()
        relay = lab.relay(f"{ra}:127.0.0.1:{ga}", f"{rb}:127.0.0.1:{gb}")
        relay.wait_listening(ra, "udp")
        relay.wait_listening(rb, "udp")
        nd_a, nd_b = nd_socket_udp(ra, ga), nd_socket_udp(rb, gb)
    b = lab.guest("b", nd_b, env={**SERVE, **env})
    a = lab.guest("a", nd_a, env={**env, **ping_env([b], count=COUNT, size=8000)})
    a.wait_for(r"FR-UP .*mtu=9000", 30)
    expect_clean_pings(a, [b], COUNT)
    assert a.results()[0]["size"] == "8000"


def test_relay_tcp_hub_e1000(lab, guest_image_e1000):
    # e1000.ko exists only in the generic kernel flavour, so these guests boot that one.
    port = free_port()
    relay = lab.relay("-l", port)
    relay.wait_listening(port)
    img = guest_image_e1000
    b = lab.guest("b", nd_socket_connect(port), image=img, nic="e1000", env=SERVE)
    a = lab.guest(
        "a", nd_socket_connect(port), image=img, nic="e1000", env=ping_env([b], count=COUNT)
    )
    a.wait_for(r"FR-UP .*driver=e1000", 40)
    expect_clean_pings(a, [b], COUNT)

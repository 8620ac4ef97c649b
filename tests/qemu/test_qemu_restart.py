"""Kill fastrelay mid-test, start it again, and record which qemu attachments recover.

What qemu 7.2 does (net/socket.c, net/stream.c), and what these tests pin down:

- ``-netdev socket,connect=`` tries to connect once. When the relay goes away qemu closes
  the socket and never connects again: the guest stays cut off after the relay restarts.
- ``-netdev stream,server=off`` behaves the same in 7.2 (``reconnect=`` arrives in 8.0).
- ``-netdev socket,listen=`` accepts a new client after EOF, so a relay that connects out
  to such guests (``fastrelay 127.0.0.1:P1 127.0.0.1:P2``) restores the link by itself.
- UDP (``socket,udp=`` / ``dgram``) has no connection: a restarted relay just carries on.

So the way to survive relay restarts with qemu 7.2 is to make the guests the listeners.
The converse, a guest restarting behind a running relay, needs the relay to connect again:
``--reconnect`` does that for TCP client targets (test_guest_restart_with_reconnect).
"""

from __future__ import annotations

import signal

import pytest

from .harness import (
    free_port,
    nd_socket_connect,
    nd_socket_listen,
    nd_socket_udp,
    nd_stream_inet,
    ping_env,
    port_listening,
    tcp_established,
    wait_until,
)

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("fastrelay_cli")]

COUNT = 3
# Rounds keep coming until the harness has what it needs and kills the guest.
PING = {"count": COUNT, "rounds": 60, "gap": 0.3}
SERVE = {"fr_action": "serve"}


def clean(r: dict[str, str]) -> bool:
    return r["received"] == str(COUNT) and r["loss"] == "0"


def setup(lab, mode: str):
    """Start relay and guests for a mode; return (relay, pinger, after_restart_ready)."""
    if mode in ("socket-connect-hub", "stream-inet-hub"):
        port = free_port()
        relay = lab.relay("-l", port)
        relay.wait_listening(port)
        nd = nd_socket_connect(port) if mode.startswith("socket") else nd_stream_inet(port)
        b = lab.guest("b", nd, env=SERVE)
        a = lab.guest("a", nd, env=ping_env([b], **PING))

        def ready():
            relay.wait_listening(port)
            # qemu does not come back: no client connection on the new hub.
            return tcp_established(port)

    elif mode == "socket-listen-p2p":
        p1, p2 = free_port(), free_port()
        b = lab.guest("b", nd_socket_listen(p1), env=SERVE)
        a = lab.guest("a", nd_socket_listen(p2), env=ping_env([b], **PING))
        wait_until(
            lambda: port_listening(p1, "tcp") and port_listening(p2, "tcp"),
            15,
            "qemu listen= sockets",
            lab.diagnostics,
        )
        relay = lab.relay(f"127.0.0.1:{p1}", f"127.0.0.1:{p2}")

        def ready():
            # The new relay has connected to both guests (qemu accepted it again).
            wait_until(
                lambda: tcp_established(p1) and tcp_established(p2),
                15,
                "qemu listen= to accept the restarted relay",
                lab.diagnostics,
            )
            return tcp_established(p1) + tcp_established(p2)

    elif mode == "udp-p2p":
        ra, ga, rb, gb = (free_port("udp") for _ in range(4))
        relay = lab.relay(f"{ra}:127.0.0.1:{ga}", f"{rb}:127.0.0.1:{gb}")
        relay.wait_listening(ra, "udp")
        relay.wait_listening(rb, "udp")
        b = lab.guest("b", nd_socket_udp(rb, gb), env=SERVE)
        a = lab.guest("a", nd_socket_udp(ra, ga), env=ping_env([b], **PING))

        def ready():
            relay.wait_listening(ra, "udp")
            relay.wait_listening(rb, "udp")
            return 0

    else:
        raise ValueError(mode)
    return relay, a, ready


@pytest.mark.parametrize(
    "mode, recovers",
    [
        ("socket-connect-hub", False),
        ("stream-inet-hub", False),
        ("socket-listen-p2p", True),
        ("udp-p2p", True),
    ],
)
def test_relay_restart(lab, mode, recovers):
    relay, a, ready = setup(lab, mode)
    first = a.wait_results(1, 45)[0]
    assert clean(first), f"no clean ping before the restart: {first}\n{lab.diagnostics()}"

    relay.kill(signal.SIGKILL)
    relay.start()
    connections = ready()
    # Skip the round that was in flight during the restart; judge the next three.
    n0 = len(a.results())
    after = a.wait_results(n0 + 4, 60)[n0 + 1 : n0 + 4]
    summary = [f"{r['received']}/{r['sent']}" for r in after]

    if recovers:
        assert clean(after[-1]), f"{mode}: no recovery after restart {summary}\n{lab.diagnostics()}"
    else:
        assert connections == 0, f"{mode}: qemu reconnected ({connections} connections)?"
        assert all(r["received"] == "0" for r in after), (
            f"{mode}: expected qemu to stay disconnected, got {summary}\n{lab.diagnostics()}"
        )


def test_guest_restart_with_reconnect(lab):
    # A hub with --reconnect connects out to guest b (socket,listen=); guest a joins the hub.
    # b is killed and a new qemu takes its place (same port, IP and MAC): the hub must
    # connect to the newcomer by itself and a's pings must come through again.
    port, pb = free_port(), free_port()
    b = lab.guest("b", nd_socket_listen(pb), env=SERVE)
    wait_until(lambda: port_listening(pb, "tcp"), 15, "qemu listen=", b.tail)
    relay = lab.relay("--reconnect", "-l", port, f"127.0.0.1:{pb}")
    relay.wait_listening(port)
    a = lab.guest("a", nd_socket_connect(port), env=ping_env([b], **PING))
    first = a.wait_results(1, 45)[0]
    assert clean(first), f"no clean ping before the guest restart: {first}\n{lab.diagnostics()}"

    b.kill()
    b2 = lab.guest("b2", nd_socket_listen(pb), ip=b.ip_cidr, mac=b.mac, env=SERVE)
    b2.wait_for("^FR-UP", 30)
    wait_until(lambda: tcp_established(pb) > 0, 30, "the hub to reconnect to b2", lab.diagnostics)
    assert relay.alive(), f"the hub exited when its target went away\n{relay.tail()}"
    n0 = len(a.results())
    after = a.wait_results(n0 + 3, 60)[n0 + 1 : n0 + 3]
    summary = [f"{r['received']}/{r['sent']}" for r in after]
    assert clean(after[-1]), f"no pings through the reconnected hub: {summary}\n{lab.diagnostics()}"

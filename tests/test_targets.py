"""Target syntax: every netrelay form, the extensions, and one clear error for each bad input."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import wait_bound
from peers import LOOP4, DgramPeer, exchange_windowed, free_port, random_frames

from fastrelay.config import parse_config
from fastrelay.errors import ConfigError, TargetError
from fastrelay.targets import (TARGET_FORMS, TARGET_HELP, BridgeTarget, StdioTarget, TapTarget,
                               TCPListenTarget, TCPTarget, UDPTarget, UnixDgramTarget,
                               UnixListenTarget, UnixTarget, parse_listen, parse_target,
                               wrap_netdev)


@pytest.mark.parametrize("arg, expected", [
    ("-", StdioTarget()),
    ("5000:127.0.0.1:6000", UDPTarget(5000, "127.0.0.1", 6000)),
    (":127.0.0.1:6000", UDPTarget(6000, "127.0.0.1", 6000)),   # omitted port = the other
    ("5000:127.0.0.1:", UDPTarget(5000, "127.0.0.1", 5000)),
    ("5000:[::1]:6000", UDPTarget(5000, "::1", 6000)),
    ("7001::7002", UDPTarget(7001, "127.0.0.1", 7002)),   # netrelay's TODO: empty = 127.0.0.1
    ("7002::7001", UDPTarget(7002, "127.0.0.1", 7001)),
    ("5000:127.0.0.1:5000", UDPTarget(5000, "127.0.0.1", 5000)),  # a named host: unchanged
    ("127.0.0.1:5000", TCPTarget("127.0.0.1", 5000)),
    ("[::1]:5000", TCPTarget("::1", 5000)),
    ("[fe80::1%eth0]:5000", TCPTarget("fe80::1%eth0", 5000)),
    ("vm-host.example:5000", TCPTarget("vm-host.example", 5000)),
    ("listen:5000", TCPListenTarget(None, 5000)),
    ("listen:127.0.0.1:5000", TCPListenTarget("127.0.0.1", 5000)),
    ("unix:/run/vm.sock", UnixTarget("/run/vm.sock")),
    ("unix-listen:@hub", UnixListenTarget("\0hub")),
    ("unixgram:/tmp/a:/tmp/b", UnixDgramTarget("/tmp/a", "/tmp/b")),
    ("unixgram:/tmp/a", UnixDgramTarget("/tmp/a", None)),
    ("br0", BridgeTarget("br0")),
    ("br-lan", BridgeTarget("br-lan")),       # netrelay refuses '-'
    ("vmbr0.10", BridgeTarget("vmbr0.10")),   # and '.'
    ("tap:tap0", TapTarget("tap0")),
    ("tap:tap0,queues=4", TapTarget("tap0", queues=4)),
    ("br0,offload=off", BridgeTarget("br0", offload=False)),
    ("vmbr0.10,queues=2,offload=on", BridgeTarget("vmbr0.10", queues=2)),
    # ,trunk: a link to another relay, on any target but stdio.
    ("relay2.example:5000,trunk", TCPTarget("relay2.example", 5000, trunk=True)),
    ("[::1]:5000,trunk", TCPTarget("::1", 5000, trunk=True)),
    ("listen:127.0.0.1:5001,trunk", TCPListenTarget("127.0.0.1", 5001, trunk=True)),
    ("5000:127.0.0.1:6000,trunk", UDPTarget(5000, "127.0.0.1", 6000, trunk=True)),
    ("unix:/run/r2.sock,trunk", UnixTarget("/run/r2.sock", trunk=True)),
    ("unix-listen:@hub,trunk", UnixListenTarget("\0hub", trunk=True)),
    ("unixgram:/tmp/a:/tmp/b,trunk", UnixDgramTarget("/tmp/a", "/tmp/b", trunk=True)),
    ("tap:tap0,trunk,queues=2", TapTarget("tap0", queues=2, trunk=True)),
    ("br0,offload=off,trunk", BridgeTarget("br0", offload=False, trunk=True)),
])
def test_accepted_forms(arg: str, expected: object) -> None:
    assert parse_target(arg) == expected


@pytest.mark.parametrize("arg, reason", [
    ("", "empty target"),
    ("5000", "a bare port is not a target"),
    (":127.0.0.1:", "needs a listening port, a sending port, or both"),
    ("::1:5000", "write IPv6 addresses in [brackets]"),
    ("127.0.0.1:0", "is not a port number"),
    ("127.0.0.1:65536", "is not a port number"),
    ("127.0.0.1:http", "is not a port number"),
    ("[::1:5000", "'[' without ']'"),
    ("[]:5000", "empty IPv6 address"),
    (":5000", "missing host"),
    ("unix:", "missing socket path"),
    ("a-very-long-interface-name", "not an address and not a valid interface name"),
    ("tap:a/b", "not a valid interface name"),
    ("tap:t0,queues=0", "unknown tap option 'queues=0'"),
    ("br0,mtu=9000", "unknown tap option 'mtu=9000'"),
    ("7001::7001", ("LPORT::SPORT needs two different ports: port 7001 would send every "
                    "frame back to itself")),
    ("7001::", "LPORT::SPORT (UDP on 127.0.0.1) needs both ports"),
    ("::7001", "LPORT::SPORT (UDP on 127.0.0.1) needs both ports"),
    ("::", "LPORT::SPORT (UDP on 127.0.0.1) needs both ports"),
    ("7001::70000", "sending port '70000' is not a port number"),
    ("x::7001", "listening port 'x' is not a port number"),
    ("127.0.0.1:5000,fast", "unknown target option 'fast' (known: trunk"),
    ("127.0.0.1:5000,trunk=yes", "unknown target option 'trunk=yes'"),
    ("listen:5000,", "unknown target option ''"),
    ("127.0.0.1:5000,queues=2", "option 'queues=2' is for tap and bridge targets only"),
    ("-,trunk", "stdio ('-') takes no options"),
    ("unix:/tmp/a,b.sock", "unknown target option 'b.sock'"),   # ',' starts the options
])
def test_rejected_forms_name_the_argument_and_reason(arg: str, reason: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(arg)
    assert reason in str(info.value)
    assert repr(arg) in str(info.value)


def test_listen_forms() -> None:
    assert parse_listen("5000") == TCPListenTarget(None, 5000)
    assert parse_listen("[::1]:5000") == TCPListenTarget("::1", 5000)
    assert parse_listen("unix:/tmp/h.sock") == UnixListenTarget("/tmp/h.sock")
    assert parse_listen("5000,trunk") == TCPListenTarget(None, 5000, trunk=True)
    assert parse_listen("unix:/tmp/h.sock,trunk") == UnixListenTarget("/tmp/h.sock", trunk=True)
    with pytest.raises(TargetError):
        parse_listen("1:2:3")
    with pytest.raises(TargetError, match="is for tap and bridge targets only"):
        parse_listen("5000,queues=2")


def test_local_udp_form_in_the_config_and_its_errors_at_their_line() -> None:
    config = parse_config('[link.a]\nendpoints = ["7001::7002", "7003::7004"]\n')
    assert config.links["a"].targets == (UDPTarget(7001, "127.0.0.1", 7002),
                                         UDPTarget(7003, "127.0.0.1", 7004))
    with pytest.raises(ConfigError) as info:
        parse_config('[hub.h]\nlisten = "5000"\nendpoints = ["7001::7001"]\n', "lab.toml")
    assert str(info.value) == ("lab.toml:3: hub.h.endpoints[0]: LPORT::SPORT needs two "
                               "different ports: port 7001 would send every frame back to "
                               "itself")


def test_local_udp_form_relays_both_ways(relay) -> None:  # type: ignore[no-untyped-def]
    """`fastrelay LA::PA LB::PB` links two UDP guests on 127.0.0.1 (qemu socket,udp=)."""
    a, b = DgramPeer(), DgramPeer()
    la, lb = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    relay(f"{la}::{a.port}", f"{lb}::{b.port}")
    wait_bound(la, socket.SOCK_DGRAM)
    wait_bound(lb, socket.SOCK_DGRAM)
    a.peer, b.peer = (LOOP4, la), (LOOP4, lb)
    there = random_frames(300, 14, 9000, seed=13)
    assert exchange_windowed(a.send, b.recv, there) == there
    back = random_frames(300, 14, 9000, seed=14)
    assert exchange_windowed(b.send, a.recv, back) == back
    a.expect_silence(0.1)  # nothing echoed to the sender
    b.expect_silence(0.1)


def test_help_documents_every_form() -> None:
    for form in TARGET_FORMS:
        assert f"  {form.syntax}" in TARGET_HELP


def test_netdev_values_are_cut_after_commas_only() -> None:
    value = "stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=PORT"
    lines = wrap_netdev(value, 30)
    assert "".join(lines) == value
    assert all(line.endswith(",") for line in lines[:-1])
    assert all(len(line) <= 30 for line in lines)
    assert wrap_netdev("a-single-part-longer-than-the-width", 5) == [
        "a-single-part-longer-than-the-width"]


def test_cli_refuses_lport_lport_with_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "fastrelay", "7001::7001", "7003::7004"],
                            check=False, capture_output=True, text=True, timeout=20,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr == ("fastrelay: bad target '7001::7001': LPORT::SPORT needs two "
                             "different ports: port 7001 would send every frame back to "
                             "itself\n")

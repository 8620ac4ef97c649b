"""Target syntax: every netrelay form, the extensions, and one clear error for each bad input."""

from __future__ import annotations

import pytest

from fastrelay.errors import TargetError
from fastrelay.targets import (BridgeTarget, StdioTarget, TapTarget, TCPListenTarget, TCPTarget,
                               UDPTarget, UnixDgramTarget, UnixListenTarget, UnixTarget,
                               parse_listen, parse_target)


@pytest.mark.parametrize("arg, expected", [
    ("-", StdioTarget()),
    ("5000:127.0.0.1:6000", UDPTarget(5000, "127.0.0.1", 6000)),
    (":127.0.0.1:6000", UDPTarget(6000, "127.0.0.1", 6000)),   # omitted port = the other
    ("5000:127.0.0.1:", UDPTarget(5000, "127.0.0.1", 5000)),
    ("5000:[::1]:6000", UDPTarget(5000, "::1", 6000)),
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
    with pytest.raises(TargetError):
        parse_listen("1:2:3")

"""VXLAN through the real CLI and daemon: bad input, two relays joined by VXLAN, the counters."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from conftest import wait_bound, wait_until
from peers import LOOP4, DgramPeer, exchange_windowed, free_port, make_frame, random_frames
from test_metrics import parse_prometheus, value
from vxlan_peers import FakeVtep, udp_socket, vxlan_header

from fastrelay.config import parse_config
from fastrelay.control import query
from fastrelay.errors import ConfigError
from fastrelay.targets import VxlanTarget, parse_target


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastrelay", *args], capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrelay: "), result.stderr
    return lines[0]


def test_target_forms() -> None:
    assert parse_target("vxlan:42:4789:10.0.0.2:4789") == VxlanTarget(
        42, 4789, (("10.0.0.2", 4789),))
    t = parse_target("vxlan:0:4789:[fd00::2]:8472,peer=[fd00::3]:4789,peer=vtep.example:4789")
    assert t == VxlanTarget(0, 4789, (("fd00::2", 8472), ("fd00::3", 4789),
                                      ("vtep.example", 4789)))
    # Like the UDP target, one port may stand for both.
    assert parse_target("vxlan:16777215::h:8472") == VxlanTarget(16777215, 8472, (("h", 8472),))
    assert str(t) == "vxlan 0 [fd00::2]:8472 and 2 more (local port 4789)"


TOO_MANY = "vxlan:1:4789:h:1" + "".join(f",peer=10.0.{i // 256}.{i % 256}:4789"
                                        for i in range(256))


@pytest.mark.parametrize("target, text", [
    ("vxlan:16777216:4789:h:4789", "VNI '16777216' is not a number within 0..16777215"),
    ("vxlan:-1:4789:h:4789", "VNI '-1' is not a number within 0..16777215"),
    ("vxlan:x:4789:h:4789", "VNI 'x' is not a number"),
    ("vxlan:1:0:h:4789", "local port '0' is not a port number"),
    ("vxlan:1:4789:h:65536", "remote port '65536' is not a port number"),
    ("vxlan:1:4789:h", "expected vxlan:VNI:LPORT:HOST:RPORT"),
    ("vxlan:1:4789:h:4789,peer=g", "peer='g': expected peer=HOST:PORT"),
    ("vxlan:1:4789:h:4789,peer=g:0", "peer port '0' is not a port number"),
    ("vxlan:1:4789:h:4789,peer=h:4789", "remote endpoint h:4789 is given twice"),
    (TOO_MANY, "257 remote endpoints: at most 256"),
    ("127.0.0.1:1,peer=h:1", "option 'peer=h:1' is for vxlan: targets only"),
])
def test_bad_targets_are_one_line_and_exit_2(target: str, text: str) -> None:
    result = run("-l", "127.0.0.1:1", target)
    assert result.returncode == 2
    assert text in one_line(result)


def test_two_vxlan_targets_point_to_point_are_refused() -> None:
    result = run("vxlan:1:4789:h:4789", "vxlan:2:4790:g:4789")
    assert result.returncode == 2
    assert "would forward nothing" in one_line(result)


def test_an_unresolvable_peer_is_one_line_and_exit_1() -> None:
    result = run("-l", f"127.0.0.1:{free_port()}",
                 f"vxlan:1:{free_port(kind=socket.SOCK_DGRAM)}:127.0.0.1:4789,peer=no-such.invalid:1")
    assert result.returncode == 1
    assert "cannot resolve 'no-such.invalid'" in one_line(result)


def test_a_link_local_peer_without_its_link_is_one_line_and_exit_1() -> None:
    # Sent to by route, but its datagrams come in named with their link: never recognised.
    result = run("-l", f"127.0.0.1:{free_port()}",
                 f"vxlan:1:{free_port(kind=socket.SOCK_DGRAM)}:[fe80::2]:4789")
    assert result.returncode == 1
    assert ("remote endpoint 'fe80::2' is link-local: name its link, as [fe80::2%eth0]:4789"
            in one_line(result))


@pytest.mark.parametrize("host, text", [
    ("2001:db8::2%lo", "only a link-local address has a %link"),
    ("fe80::2%99999999999", "no link '99999999999' here"),
    ("fe80::2%no-such-link", "no link 'no-such-link' here"),
    ("fe80::2%25lo", "no link '25lo' here (%25 is URL encoding: write %eth0)"),
])
@pytest.mark.parametrize("kind", ["tcp", "udp", "vxlan"])
def test_a_link_that_cannot_be_had_is_one_line_and_exit_1(kind: str, host: str,
                                                          text: str) -> None:
    # Every endpoint resolves a host the same way: the link is checked before anything.
    udp = [f"{free_port(kind=socket.SOCK_DGRAM)}:{LOOP4}:{free_port(kind=socket.SOCK_DGRAM)}"]
    target = {"tcp": f"[{host}]:9", "udp": f"{free_port(kind=socket.SOCK_DGRAM)}:[{host}]:9",
              "vxlan": f"vxlan:1:{free_port(kind=socket.SOCK_DGRAM)}:[{host}]:4789"}[kind]
    result = run(target, *udp)
    assert result.returncode == 1
    assert f"cannot resolve {host!r}: {text}" in one_line(result)


def test_config_table_form_is_the_target_string() -> None:
    config = parse_config('[hub.lab]\nmode = "switch"\nlisten = "127.0.0.1:5000"\n'
                          'endpoints = [{ vxlan = 42, port = 4789, '
                          'peers = ["10.0.0.2:4789", "[fd00::3]:4789"] }]\n')
    spec = config.links["lab"]
    assert spec.endpoints[1] == "vxlan:42:4789:10.0.0.2:4789,peer=[fd00::3]:4789"
    assert spec.targets[1] == parse_target(spec.endpoints[1])


@pytest.mark.parametrize("endpoint, text", [
    ("{ vxlan = 16777216, port = 4789, peers = [\"a:1\"] }",
     "endpoints[0].vxlan: 16777216 is out of range (0..16777215)"),
    ("{ vxlan = 1, port = 70000, peers = [\"a:1\"] }",
     "endpoints[0].port: 70000 is out of range (1..65535)"),
    ("{ vxlan = 1, port = 4789, peers = [] }", "endpoints[0].peers: must be a non-empty list"),
    ("{ vxlan = 1, port = 4789, peers = [\"a\"] }", "expected HOST:PORT"),
    ("{ vxlan = 1, port = 4789, peers = [\"a:1\", \"a:1\"] }", "a:1 is given twice"),
    ("{ vxlan = 1, port = 4789, peers = [\"a:1\"], ttl = 3 }", "endpoints[0].ttl: unknown key"),
    ("{ port = 4789, peers = [\"a:1\"] }", "a vxlan endpoint table needs `vxlan`"),
    ("\"vxlan:1:4789:a:1,peer=b\"", "peer='b': expected"),
])
def test_config_errors_name_file_line_and_key(endpoint: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f'[hub.lab]\nlisten = "5000"\nendpoints = [\n  {endpoint},\n]\n',
                     "lab.toml")
    lines = str(info.value).splitlines()
    assert any(line.startswith("lab.toml:4: hub.lab.") and text in line for line in lines), lines


def test_config_refuses_a_vxlan_port_another_udp_target_binds() -> None:
    with pytest.raises(ConfigError, match="binds the same udp address"):
        parse_config('[hub.a]\nendpoints = ["vxlan:1:4789:h:1", "4789:g:2"]\n')
    with pytest.raises(ConfigError, match="would forward nothing"):
        parse_config('[link.a]\nendpoints = ["vxlan:1:4789:h:1", "vxlan:2:4790:g:1"]\n')


def _vxlan_pair(relay_process):  # type: ignore[no-untyped-def]
    """Two switches joined only by VXLAN over 127.0.0.1, a UDP guest on each."""
    va, vb = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    ga, gb = DgramPeer(), DgramPeer()
    ua, ub = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    for lport, guest, vx, peer in ((ua, ga, va, vb), (ub, gb, vb, va)):
        relay_process("--switch", "-l", f"{LOOP4}:{free_port()}",
                      f"{lport}:{LOOP4}:{guest.port}", f"vxlan:42:{vx}:{LOOP4}:{peer}")
        wait_bound(vx, socket.SOCK_DGRAM)
        wait_bound(lport, socket.SOCK_DGRAM)
        guest.peer = (LOOP4, lport)
    return ga, gb


def test_two_relays_joined_only_by_vxlan(relay_process) -> None:  # type: ignore[no-untyped-def]
    ga, gb = _vxlan_pair(relay_process)
    a_mac, b_mac = b"\x02\x00\x00\x00\x0a\x01", b"\x02\x00\x00\x00\x0b\x01"
    hello = make_frame(1500, 0, src=a_mac)
    ga.send([hello])
    assert gb.recv(1) == [hello]
    reply = b_mac.join([a_mac, make_frame(1500, 1)[12:]])  # unicast to A's MAC, 1500 B
    gb.send([reply])
    assert ga.recv(1) == [reply]
    # Bursts both ways (GSO runs between the relays), byte-exact, in order, none lost.
    for sender, receiver, src, seed in ((ga, gb, a_mac, 1), (gb, ga, b_mac, 2)):
        frames = [src.join([b"\xff" * 6, f[12:]]) for f in random_frames(2000, 60, 1500, seed)]
        assert exchange_windowed(sender.send, receiver.recv, frames, window=256) == frames
        frames = [src.join([b"\xff" * 6, make_frame(1500, i)[12:]]) for i in range(1000)]
        assert exchange_windowed(sender.send, receiver.recv, frames, window=500) == frames
    ga.expect_silence(0.1)
    gb.expect_silence(0.1)


def test_point_to_point_floods_to_every_remote_endpoint(relay_process) -> None:  # type: ignore[no-untyped-def]
    """Point to point (and a hub) never learn where to send: every frame goes to every
    remote endpoint, and every remote endpoint's frames reach the other side."""
    v1, v2 = FakeVtep("127.0.0.2"), FakeVtep("127.0.0.3")
    guest = DgramPeer()
    vport, uport = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    (h1, p1), (h2, p2) = v1.address, v2.address
    relay_process(f"{uport}:{LOOP4}:{guest.port}", f"vxlan:7:{vport}:{h1}:{p1},peer={h2}:{p2}")
    wait_bound(vport, socket.SOCK_DGRAM)
    wait_bound(uport, socket.SOCK_DGRAM)
    guest.peer = (LOOP4, uport)
    v1.to = v2.to = (LOOP4, vport)
    v1.vni = v2.vni = 7
    frames = [make_frame(1500, i, src=b"\x02\x00\x00\x00\x00\x0a") for i in range(3)]
    v1.send(frames[:1])
    assert guest.recv(1) == frames[:1]
    unicast = b"\x02\x00\x00\x00\x00\x0a" + frames[1][6:]  # to the MAC behind VTEP 1
    guest.send([unicast, frames[2]])
    assert v1.recv(2) == [unicast, frames[2]] and v2.recv(2) == [unicast, frames[2]]
    v2.send(frames[1:2])
    assert guest.recv(1) == frames[1:2]


def test_daemon_reports_vxlan_counters_in_stats_and_metrics(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    vtep = FakeVtep("127.0.0.2")
    vport = free_port(kind=socket.SOCK_DGRAM)
    host, rport = vtep.address
    guest = DgramPeer()  # a hub reads a port only when another could take its frames
    daemon_process(f'[daemon]\ncontrol = "{ctl}"\n[hub.lab]\nmode = "switch"\n'
                   f'endpoints = [{{ vxlan = 42, port = {vport}, '
                   f'peers = ["{host}:{rport}", "127.0.0.3:4789"] }},\n'
                   f'  "{free_port(kind=socket.SOCK_DGRAM)}:{LOOP4}:{guest.port}"]\n')
    wait_bound(vport, socket.SOCK_DGRAM)
    vtep.to = (LOOP4, vport)
    vtep.send_raw(vxlan_header(43) + make_frame(60))          # another VNI
    vtep.send_raw(vxlan_header(42) + make_frame(60),
                  sock=udp_socket(LOOP4))                      # from 127.0.0.1: a stranger
    label = f"vxlan:42:{vport}:{host}:{rport},peer=127.0.0.3:4789"

    def endpoint() -> dict:  # type: ignore[type-arg]
        doc = json.loads(query(ctl))
        return next(e for e in doc["links"][0]["endpoints"] if e["endpoint"] == label)

    wait_until(lambda: endpoint()["vxlan"]["drop_vni"] == 1
               and endpoint()["vxlan"]["drop_foreign"] == 1, what="the drops counted")
    ep = endpoint()
    assert ep["drop_invalid"] == 2 and ep["vxlan"] == {"drop_vni": 1, "drop_foreign": 1,
                                                       "drop_mtu": 0, "replicated": 0}
    assert ep["ports"][0]["drop_vni"] == 1 and ep["ports"][0]["peers"] == 2
    # A MAC learned through VXLAN: the MAC table names the remote endpoint it is behind.
    vtep.send([make_frame(60, src=b"\x02\x00\x00\x00\x00\x7e")])
    guest.recv(1)
    rows = json.loads(query(ctl))["links"][0]["switch"]["mac_table"]
    assert [(r["mac"], r["endpoint"], r.get("remote")) for r in rows] == [
        ("02:00:00:00:00:7e", label, f"{host}:{rport}")]
    samples, _ = parse_prometheus(query(ctl, "metrics"))
    assert value(samples, "fastrelay_vxlan_dropped_frames_total", link="lab", endpoint=label,
                 reason="vni") == 1
    assert value(samples, "fastrelay_vxlan_dropped_frames_total", link="lab", endpoint=label,
                 reason="foreign") == 1
    assert value(samples, "fastrelay_vxlan_replicated_frames_total", link="lab",
                 endpoint=label) == 0

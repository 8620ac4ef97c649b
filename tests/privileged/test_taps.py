"""Bridge and tap targets end to end: test hosts in namespaces ping across fastrelay."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from privileged.netns import NOBODY, Lab, wait_for

pytestmark = pytest.mark.privileged

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


def two_hosts(lab: Lab, mtu: int = 1500) -> tuple[str, str]:
    """Bridges brA and br-b.2 (a name netrelay refuses) with one test host each."""
    lab.bridge("brA", mtu)
    lab.bridge("br-b.2", mtu)
    ha = lab.host("a", "brA", A4, A6, mtu)
    hb = lab.host("b", "br-b.2", B4, B6, mtu)
    return ha, hb


def started(lab: Lab, proc: subprocess.Popen[bytes], *bridges: str) -> None:
    """Wait until proc has a tap up in each bridge (or fail with its stderr)."""
    def ready() -> bool:
        if proc.poll() is not None:
            _, err = lab.stop(proc)
            raise AssertionError(f"relay exited {proc.returncode}: {err}")
        return all(lab.bridge_taps(b) for b in bridges)
    wait_for(f"taps in {bridges}", ready)


def stop_clean(lab: Lab, proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM the relay: it exits 0 and leaves no tap behind. Returns its stderr."""
    status, err = lab.stop(proc)
    assert status == 0, err
    wait_for("the relay's taps to vanish", lambda: not lab.taps(), timeout=5)
    return err


def test_bridge_to_bridge_ping_and_cleanup(lab: Lab) -> None:
    ha, _ = two_hosts(lab)
    relay = lab.relay("brA", "br-b.2")
    started(lab, relay, "brA", "br-b.2")
    tap = lab.bridge_taps("brA")[0]
    assert lab.links()[tap]["mtu"] == 1500
    lab.ping_until(ha, B4)
    err = stop_clean(lab, relay)
    # Point to point between two bridges: offloads on (super-frames pass tap to tap).
    assert "offloads 0x" in err, err


def test_jumbo_frames_with_the_bridge_mtu(lab: Lab) -> None:
    ha, _ = two_hosts(lab, mtu=9000)
    relay = lab.relay("brA", "br-b.2")
    started(lab, relay, "brA", "br-b.2")
    links = lab.links()
    for bridge in ("brA", "br-b.2"):
        assert links[lab.bridge_taps(bridge)[0]]["mtu"] == 9000
        assert links[bridge]["mtu"] == 9000   # not pinned to 1500, as netrelay's taps do
    # 8972 + 28 = 9000 bytes of IPv4, unfragmented (-M do).
    lab.ping_until(ha, B4, size=8972, fragment=False)
    stop_clean(lab, relay)


def test_ipv6_ping(lab: Lab) -> None:
    ha, _ = two_hosts(lab)
    relay = lab.relay("brA", "br-b.2")
    started(lab, relay, "brA", "br-b.2")
    lab.ping_until(ha, B6)
    stop_clean(lab, relay)


def test_hub_with_bridge_targets(lab: Lab) -> None:
    ha, hb = two_hosts(lab)
    relay = lab.relay("-l", "127.0.0.1:5500", "brA", "br-b.2")
    started(lab, relay, "brA", "br-b.2")
    lab.ping_until(ha, B4)
    lab.ping_until(hb, A6)
    err = stop_clean(lab, relay)
    # A hub may get plain clients: offloads stay off, the kernel segments for us.
    assert "offloads off" in err, err


@pytest.mark.parametrize("link", ["udp", "tcp"])
def test_two_relays_linked(lab: Lab, link: str) -> None:
    ha, _ = two_hosts(lab, mtu=9000)
    if link == "udp":
        first = lab.relay("brA", "6001:127.0.0.1:6002")
        second = lab.relay("6002:127.0.0.1:6001", "br-b.2")
    else:
        first = lab.relay("brA", "listen:127.0.0.1:6003")
        second = lab.relay("--reconnect", "127.0.0.1:6003", "br-b.2")
    started(lab, first, "brA")
    started(lab, second, "br-b.2")
    lab.ping_until(ha, B4)
    lab.ping_until(ha, B4, size=8972, fragment=False)
    for proc in (second, first):
        lab.stop(proc)
    wait_for("taps to vanish", lambda: not lab.taps(), timeout=5)


def test_multi_queue_taps(lab: Lab) -> None:
    ha, _ = two_hosts(lab)
    relay = lab.relay("brA,queues=4", "br-b.2,queues=2")
    started(lab, relay, "brA", "br-b.2")
    lab.ping_until(ha, B4)
    stop_clean(lab, relay)


def test_tcp_stream_is_intact_through_super_frames(lab: Lab) -> None:
    """32 MiB over TCP between the hosts, tap to tap with offloads on: same digest."""
    ha, hb = two_hosts(lab)
    relay = lab.relay("brA", "br-b.2")
    started(lab, relay, "brA", "br-b.2")
    lab.ping_until(ha, B4)
    server = lab.popen(hb, [sys.executable, "-c", _SINK], stdout=subprocess.PIPE)
    time.sleep(0.3)
    sent = lab.run(ha, [sys.executable, "-c", _SOURCE], timeout=60)
    assert sent.returncode == 0, sent.stderr
    out, _ = server.communicate(timeout=30)
    assert out.decode().strip() == sent.stdout.strip()
    stop_clean(lab, relay)


_SOURCE = f"""
import hashlib, os, socket
data = os.urandom(1 << 20) * 32
s = socket.create_connection(("{B4}", 7000), timeout=20)
s.sendall(data)
s.close()
print(hashlib.sha256(data).hexdigest())
"""
_SINK = """
import hashlib, socket
ls = socket.create_server(("0.0.0.0", 7000))
ls.settimeout(20)
c, _ = ls.accept()
c.settimeout(20)
h = hashlib.sha256()
while chunk := c.recv(1 << 20):
    h.update(chunk)
print(h.hexdigest())
"""


def test_user_owned_taps_need_no_root(lab: Lab) -> None:
    ha, _ = two_hosts(lab)
    lab.user_tap("tapu0", "brA", uid=NOBODY)
    lab.user_tap("tapu1", "br-b.2", uid=NOBODY)
    relay = lab.relay("tap:tapu0", "tap:tapu1", wrap=lab.unprivileged(NOBODY))
    wait_for("the relay to run as nobody", lambda: _uid_of_child(relay) == NOBODY)
    lab.ping_until(ha, B4)
    status, err = lab.stop(relay)
    assert status == 0, err
    # Persistent taps are the user's: they stay.
    assert sorted(lab.taps()) == ["tapu0", "tapu1"]


def _uid_of_child(proc: subprocess.Popen[bytes]) -> int | None:
    """Real uid of the python process somewhere under proc (ip netns exec, unshare, sh)."""
    if proc.poll() is not None:
        raise AssertionError(f"relay exited {proc.returncode}: "
                             f"{proc.stderr.read().decode() if proc.stderr else ''}")
    pending = [proc.pid]
    while pending:
        pid = pending.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue    # gone (exec'd or exited) between two reads
        if "fastrelay" in cmdline:
            for line in status.splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) != 0:
                    return int(line.split()[1])
        pending += [int(c) for c in children]
    return None


def one_error_line(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The exit status and the single stderr line of a relay that fails to start."""
    _, err = proc.communicate(timeout=30)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("fastrelay: ")
    return proc.returncode, lines[0]


@pytest.mark.parametrize("target, wrap, message", [
    ("va", None, "'va' is not a bridge"),                          # not a bridge
    ("brA", "hide_tun", "/dev/net/tun does not exist"),            # no tun device
    ("brA", "unprivileged", "needs CAP_NET_ADMIN"),                # no privileges
])
def test_bridge_errors_give_one_line_and_leave_nothing(lab: Lab, target: str,
                                                       wrap: str | None, message: str) -> None:
    two_hosts(lab)
    before = lab.links()
    kwargs = {"wrap": getattr(lab, wrap)()} if wrap else {}
    status, line = one_error_line(lab.relay(target, "br-b.2", verbose=False, **kwargs))
    assert status == 1
    assert message in line
    assert lab.links() == before


def test_tap_of_another_user_is_refused(lab: Lab) -> None:
    two_hosts(lab)
    lab.user_tap("tapr0", "brA", uid=0)
    status, line = one_error_line(lab.relay("tap:tapr0", "br-b.2", wrap=lab.unprivileged(),
                                            verbose=False))
    assert status == 1
    assert "belongs to another user" in line

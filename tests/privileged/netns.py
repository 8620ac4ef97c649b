"""Throwaway network namespaces for the tap and bridge tests: bridges, test hosts, relays.

Everything is made with pyroute2 inside namespaces this module creates and removes; the
host namespace is never touched. Processes run in a namespace through `ip netns exec`
and are stopped by PID. Test hosts get addresses from the documentation ranges
(192.0.2.0/24, 2001:db8::/64), which exist only inside these namespaces.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def tun_missing_reason() -> str | None:
    """Why tap tests cannot run here, or None: not root, or no tun in the kernel."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridges and taps)"
    if not os.path.exists("/dev/net/tun"):
        return "the kernel has no tun support (/dev/net/tun missing)"
    return None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll check until it returns something true (returned); AssertionError after timeout."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def socket_in(ns: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket made in namespace ns (a socket stays in the namespace it was made in)."""
    netns.pushns(ns)
    try:
        return socket.socket(family, kind)
    finally:
        netns.popns()


class Lab:
    """A set of namespaces made for one test, all removed by close() (even after a failure).

    `relay_ns` holds the bridges and runs the relays; each test host is a namespace of
    its own with one veth whose peer is enslaved to a bridge in relay_ns.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.relay_ns = ""

    def open(self) -> None:
        """Create relay_ns (apart from __init__, so that close() undoes a partial start)."""
        self.relay_ns = self.namespace("r")

    # -- building --------------------------------------------------------------------

    def namespace(self, role: str) -> str:
        """Create a namespace with loopback up; its name is unique to this process."""
        name = f"frt{os.getpid()}{self.tag}{role}"
        netns.create(name)
        self.namespaces.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def bridge(self, name: str, mtu: int = 1500) -> int:
        """A bridge in relay_ns, up, STP off; returns its index."""
        with IPRoute(netns=self.relay_ns) as ipr:
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
            return int(index)

    def host(self, role: str, bridge: str, v4: str, v6: str, mtu: int = 1500,
             bridge_ns: str | None = None) -> str:
        """A test host namespace: veth `eth0` with v4/24 and v6/64, its peer in bridge
        (a bridge of bridge_ns, by default of relay_ns)."""
        ns = self.namespace(role)
        peer = f"v{role}"
        with IPRoute(netns=bridge_ns or self.relay_ns) as ipr:
            ipr.link("add", ifname=peer, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
            index = ipr.link_lookup(ifname=peer)[0]
            master = ipr.link_lookup(ifname=bridge)[0]
            ipr.link("set", index=index, mtu=mtu, master=master, state="up")
        with IPRoute(netns=ns) as ipr:
            index = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
            ipr.addr("add", index=index, address=v4, prefixlen=24)
            # No duplicate address detection: the address is usable at once.
            ipr.addr("add", index=index, address=v6, prefixlen=64, flags=0x02)  # IFA_F_NODAD
        return ns

    def user_tap(self, name: str, bridge: str, uid: int = NOBODY, mtu: int = 1500) -> None:
        """A persistent tap owned by uid (as `ip tuntap add NAME mode tap user U`), up,
        enslaved to bridge in relay_ns."""
        with IPRoute(netns=self.relay_ns) as ipr:
            ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=uid, gid=uid)
            index = ipr.link_lookup(ifname=name)[0]
            master = ipr.link_lookup(ifname=bridge)[0]
            ipr.link("set", index=index, mtu=mtu, master=master, state="up")

    # -- looking -----------------------------------------------------------------------

    def links(self, ns: str | None = None) -> dict[str, dict[str, Any]]:
        """name -> {kind, mtu, master, up} of every interface in ns (default relay_ns)."""
        out: dict[str, dict[str, Any]] = {}
        with IPRoute(netns=ns or self.relay_ns) as ipr:
            for link in ipr.get_links():
                info = link.get("IFLA_LINKINFO")
                out[link.get("IFLA_IFNAME")] = {
                    "kind": info.get("IFLA_INFO_KIND") if info else None,
                    "mtu": link.get("IFLA_MTU"), "master": link.get("IFLA_MASTER"),
                    "up": bool(link["flags"] & 1), "index": link["index"],
                }
        return out

    def taps(self) -> list[str]:
        """Tun/tap devices in relay_ns."""
        return [n for n, v in self.links().items() if v["kind"] == "tun"]

    def bridge_taps(self, bridge: str) -> list[str]:
        """Taps enslaved to bridge and up (what a bridge target makes)."""
        links = self.links()
        index = links[bridge]["index"]
        return [n for n, v in links.items()
                if v["kind"] == "tun" and v["master"] == index and v["up"]]

    # -- running -----------------------------------------------------------------------

    def popen(self, ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start argv inside ns; stopped by PID in close()."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=REPO, **kwargs)
        self.procs.append(proc)
        return proc

    def relay(self, *args: str, ns: str | None = None, wrap: list[str] | None = None,
              verbose: bool = True) -> subprocess.Popen[bytes]:
        """`python -m fastrelay [-vv] ARGS` in ns (default relay_ns), stderr captured."""
        argv = [*(wrap or []), sys.executable, "-m", "fastrelay", *(["-vv"] if verbose else []),
                *args]
        return self.popen(ns or self.relay_ns, argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def run(self, ns: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run argv inside ns to completion, output captured."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], cwd=REPO, text=True,
                              capture_output=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def ping(self, ns: str, address: str, *, size: int = 56, count: int = 3,
             fragment: bool = True, deadline: float = 10) -> subprocess.CompletedProcess[str]:
        """ping from ns; with fragment=False the frame must pass whole (-M do)."""
        argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-s", str(size),
                "-w", f"{deadline:g}"]
        if not fragment:
            argv += ["-M", "do"]
        return self.run(ns, [*argv, address], timeout=deadline + 10)

    def ping_until(self, ns: str, address: str, timeout: float = 15, **kwargs: Any) -> None:
        """Ping until one goes through (the relay may still be starting), then 3 in a row."""
        end = time.monotonic() + timeout
        while True:
            result = self.ping(ns, address, count=1, deadline=2, **kwargs)
            if result.returncode == 0:
                break
            if time.monotonic() > end:
                raise AssertionError(f"no ping reply from {address}: {result.stdout}"
                                     f"{result.stderr}")
        result = self.ping(ns, address, **kwargs)
        assert result.returncode == 0, result.stdout + result.stderr
        assert " 0% packet loss" in result.stdout, result.stdout

    def unprivileged(self, uid: int = NOBODY) -> list[str]:
        """A command prefix that runs the rest as uid with no capabilities at all.

        A private mount namespace gives that user what a normal Debian system gives
        everyone and this machine may not: a /dev/net/tun it may open (mode 0666) and a
        way to this Python (installed under a private home, e.g. /root). The host's
        files and devices are not changed.
        """
        script = ["set -e", 'tmp=$(mktemp -d)', 'mount -t tmpfs -o mode=755 frt "$tmp"',
                  'mknod -m 666 "$tmp/tun" c 10 200', 'mount --bind "$tmp/tun" /dev/net/tun']
        n = 0
        for locked, children in _locked_dirs():
            # Keep the needed subtrees, then lay an open tmpfs over their closed parent.
            keep = []
            for child in children:
                script += [f'mkdir "$tmp/keep{n}"',
                           f"mount --bind {shlex.quote(child)} \"$tmp/keep{n}\""]
                keep.append((n, child))
                n += 1
            script.append(f"mount -t tmpfs -o mode=755 frt {shlex.quote(locked)}")
            for k, child in keep:
                script += [f"mkdir -p {shlex.quote(child)}",
                           f"mount --bind \"$tmp/keep{k}\" {shlex.quote(child)}"]
        script.append(f'exec setpriv --reuid={uid} --regid={uid} --clear-groups '
                      f'--inh-caps=-all --bounding-set=-all "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                "\n".join(script), "frt-unprivileged"]

    def hide_tun(self) -> list[str]:
        """A command prefix that runs the rest where /dev/net/tun does not exist."""
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o mode=755 frt /dev/net && exec "$@"', "frt-no-tun"]

    # -- tearing down ------------------------------------------------------------------

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5) -> tuple[int, str]:
        """SIGTERM proc (then SIGKILL); its exit status and stderr."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
        return proc.returncode, (err or b"").decode(errors="replace")

    def close(self) -> None:
        """Stop every process started here, then remove every namespace."""
        for proc in self.procs:
            if proc.poll() is None:
                self.stop(proc)
        errors = []
        for name in reversed(self.namespaces):
            try:
                netns.remove(name)
            except OSError as exc:
                errors.append(f"{name}: {exc}")
        self.namespaces = []
        assert not errors, f"namespaces not removed: {errors}"


def _locked_dirs() -> list[tuple[str, list[str]]]:
    """(closed directory, its children on our paths) for each directory on the way to this
    Python, its libraries and the repository that other users may not pass through."""
    needed = {os.path.realpath(sys.executable), sys.prefix, sys.exec_prefix, str(REPO),
              *(p for p in sys.path if p and os.path.isdir(p))}
    found: dict[str, set[str]] = {}
    for path in sorted(needed):
        parts = Path(path).parts
        for i in range(1, len(parts)):
            parent = str(Path(*parts[:i]))
            if os.path.isdir(parent) and not os.stat(parent).st_mode & 0o001:
                found.setdefault(parent, set()).add(str(Path(*parts[:i + 1])))
                break
    return [(parent, sorted(children)) for parent, children in sorted(found.items())]

"""Start qemu guests and fastrelay processes, watch their logs, and always kill them by PID.

A test builds ``-netdev`` strings with the helpers at the bottom, starts guests with
:meth:`Lab.guest` and relays with :meth:`Lab.relay`, and waits for ``FR-`` markers that
the guest's ``/init`` (init.sh) prints on its serial console.  :class:`Lab` is a context
manager: everything it started is killed on exit, whether the test passed or not.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from .guest import GuestImage

QEMU = "qemu-system-x86_64"
POLL = 0.1


def relay_command(verbose: bool = False) -> list[str]:
    """The relay under test: ``python -m fastrelay`` unless FASTRELAY_QEMU_RELAY names another
    command with the same CLI (e.g. ``netrelay``, to run the same tests against the C tool).

    ``verbose`` adds fastrelay's ``-vv`` (per-second counters and connection events), so a
    failing test's relay log shows whether frames flowed; never for another relay, whose
    ``-v`` may mean something else.
    """
    env = os.environ.get("FASTRELAY_QEMU_RELAY")
    if env:
        return shlex.split(env)
    return [sys.executable, "-m", "fastrelay", *(["-vv"] if verbose else [])]


# One pair of TCG guests saturates both cores: a host-wide lock keeps concurrent
# pytest runs, xdist workers or iperf_run from booting guests at the same time.
LOCK_PATH = Path(tempfile.gettempdir()) / "fastrelay-qemu.lock"


@contextlib.contextmanager
def guest_lock():
    """Hold the host-wide guest lock for the duration of the block."""
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# Distinct MACs across one process: qemu gives every NIC the same default MAC.
_mac_seq = itertools.count(1)


class HarnessError(AssertionError):
    """A guest or relay did not do what the test waited for; the message has its log tail."""


def free_port(kind: str = "tcp") -> int:
    """A port that is free now on 127.0.0.1, found by binding port 0 (``kind``: tcp or udp)."""
    st = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, st) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port: int, proto: str) -> bool:
    """Whether a local socket is bound to ``port`` (TCP: in LISTEN state), from /proc/net.

    Reading /proc rather than connecting: a probe connection would join a hub as a client.
    """
    for fam in ("", "6"):
        try:
            lines = Path(f"/proc/net/{proto}{fam}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            lport = int(f[1].rsplit(":", 1)[1], 16)
            if lport == port and (proto == "udp" or f[3] == "0A"):
                return True
    return False


def tcp_established(port: int) -> int:
    """How many local TCP sockets on ``port`` (local side) are ESTABLISHED, from /proc/net."""
    n = 0
    for fam in ("", "6"):
        try:
            lines = Path(f"/proc/net/tcp{fam}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                n += 1
    return n


def wait_until(cond, timeout: float, what: str, log_of=None) -> None:
    """Poll ``cond()`` until true, else raise with ``what`` and an optional log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(POLL)
    tail = f"\n--- log tail ---\n{log_of()}" if log_of else ""
    raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def _kill(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Terminate one process we started, by its PID; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


class Guest:
    """One qemu guest: its process, its serial log and its role arguments."""

    def __init__(
        self,
        name: str,
        image: GuestImage,
        netdev: str,
        workdir: Path,
        *,
        ip: str,
        nic: str = "virtio-net-pci",
        env: dict[str, object] | None = None,
        mac: str | None = None,
    ) -> None:
        self.name = name
        self.ip = ip.split("/")[0]
        self.ip_cidr = ip
        n = next(_mac_seq) + (os.getpid() & 0xFF) * 256
        # A replacement guest passes its predecessor's MAC so the peers' ARP entries stay valid.
        self.mac = mac or f"52:54:00:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
        self.log = workdir / f"{name}.serial.log"
        self.qemu_log = workdir / f"{name}.qemu.log"
        words = {"fr_ip": ip, "fr_timeout": 120, **(env or {})}
        # quiet + loglevel: serial output is slow under TCG and only FR- lines matter.
        append = "console=ttyS0 panic=-1 quiet loglevel=3 " + " ".join(
            f"{k}={v}" for k, v in words.items()
        )
        self.argv = [
            QEMU,
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "256M",
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            append,
            "-serial",
            f"file:{self.log}",
            "-netdev",
            f"{netdev},id=n0",
            # romfile= : no PXE option ROM to load, the guest boots from -kernel anyway.
            "-device",
            f"{nic},netdev=n0,mac={self.mac},romfile=",
        ]
        self.proc: subprocess.Popen | None = None
        self._results_seen = 0

    def start(self) -> Guest:
        self.log.write_text("")
        with open(self.qemu_log, "w") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def text(self) -> str:
        """The serial log up to its last complete line: qemu may be mid-way through one."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[: text.rfind("\n") + 1]

    def tail(self) -> str:
        return f"[{self.name} serial]\n{_tail(self.log)}\n[{self.name} qemu]\n{_tail(self.qemu_log, 10)}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for a regex on the serial console; fail early if qemu exits first."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text())
            if m:
                return m
            if not self.alive():
                # One last read: qemu may have written the line just before exiting.
                m = rx.search(self.text())
                if m:
                    return m
                raise HarnessError(f"{self.name} exited before /{pattern}/\n{self.tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{self.name}: no /{pattern}/ within {timeout:.0f}s\n{self.tail()}"
                )
            time.sleep(POLL)

    def results(self, kind: str = "ping") -> list[dict[str, str]]:
        """Every ``FR-RESULT <kind> k=v ...`` line so far, as dicts."""
        out = []
        for line in self.text().splitlines():
            line = line.strip()
            if line.startswith(f"FR-RESULT {kind} "):
                out.append(dict(w.split("=", 1) for w in line.split()[2:] if "=" in w))
        return out

    def wait_results(self, n: int, timeout: float, kind: str = "ping") -> list[dict[str, str]]:
        """Wait until at least ``n`` result lines of a kind have been printed."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.results(kind)
            if len(res) >= n:
                return res
            if not self.alive() or time.monotonic() > deadline:
                raise HarnessError(
                    f"{self.name}: {len(res)}/{n} FR-RESULT {kind} lines "
                    f"({'exited' if not self.alive() else f'{timeout:.0f}s timeout'})\n{self.tail()}"
                )
            time.sleep(POLL)

    def kill(self) -> None:
        if self.proc is not None:
            _kill(self.proc)


class Relay:
    """A fastrelay process (``python -m fastrelay ARGS``), output to a log file."""

    def __init__(
        self, args: list[str], workdir: Path, name: str = "relay", verbose: bool = True
    ) -> None:
        self.args = [str(a) for a in args]
        self.verbose = verbose
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Relay:
        self.starts += 1
        with open(self.log, "a") as out:
            out.write(f"--- start {self.starts}: fastrelay {' '.join(self.args)}\n")
            out.flush()
            self.proc = subprocess.Popen(
                [*relay_command(self.verbose), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return f"[relay]\n{_tail(self.log)}"

    def wait_listening(self, port: int, proto: str = "tcp", timeout: float = 10) -> None:
        def ready() -> bool:
            if not self.alive():
                raise HarnessError(f"fastrelay exited early\n{self.tail()}")
            return port_listening(port, proto)

        wait_until(ready, timeout, f"fastrelay on {proto} port {port}", self.tail)

    def wait_path(self, path: Path, timeout: float = 10) -> None:
        def ready() -> bool:
            if not self.alive():
                raise HarnessError(f"fastrelay exited early\n{self.tail()}")
            return path.exists()

        wait_until(ready, timeout, f"fastrelay socket {path}", self.tail)

    def cpu_seconds(self) -> float:
        """utime + stime of the relay so far, from /proc/PID/stat."""
        return proc_cpu_seconds(self.pid)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig == signal.SIGKILL:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=10)
        else:
            _kill(self.proc)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Lab:
    """Owns every process of one test; kills all of them, by PID, on exit."""

    def __init__(self, image: GuestImage, workdir: Path, relay_verbose: bool = True) -> None:
        self.image = image
        self.workdir = workdir
        self.relay_verbose = relay_verbose
        self.guests: list[Guest] = []
        self.relays: list[Relay] = []
        self._ip_seq = itertools.count(1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for g in self.guests:
            g.kill()
        for r in self.relays:
            r.kill()

    def next_ip(self) -> str:
        return f"169.254.0.{next(self._ip_seq)}/16"

    def guest(
        self,
        name: str,
        netdev: str,
        *,
        image: GuestImage | None = None,
        ip: str | None = None,
        start: bool = True,
        **kw,
    ) -> Guest:
        g = Guest(name, image or self.image, netdev, self.workdir, ip=ip or self.next_ip(), **kw)
        self.guests.append(g)
        return g.start() if start else g

    def relay(self, *args: object, name: str = "relay", start: bool = True) -> Relay:
        r = Relay([str(a) for a in args], self.workdir, name=name, verbose=self.relay_verbose)
        self.relays.append(r)
        return r.start() if start else r

    def diagnostics(self) -> str:
        return "\n".join([g.tail() for g in self.guests] + [r.tail() for r in self.relays])


# ---- -netdev strings (qemu 7.2 syntax); "id=" is added by Guest --------------------------


def nd_socket_udp(send_port: int, local_port: int) -> str:
    """qemu sends every frame to 127.0.0.1:send_port, receives on 127.0.0.1:local_port."""
    return f"socket,udp=127.0.0.1:{send_port},localaddr=127.0.0.1:{local_port}"


def nd_socket_listen(port: int) -> str:
    return f"socket,listen=127.0.0.1:{port}"


def nd_socket_connect(port: int) -> str:
    return f"socket,connect=127.0.0.1:{port}"


def nd_stream_inet(port: int, host: str = "127.0.0.1") -> str:
    return f"stream,server=off,addr.type=inet,addr.host={host},addr.port={port}"


def nd_stream_inet_server(port: int, host: str = "127.0.0.1") -> str:
    """qemu listens (one client at a time) and the relay connects to it."""
    return f"stream,server=on,addr.type=inet,addr.host={host},addr.port={port}"


def nd_stream_unix(path: Path) -> str:
    return f"stream,server=off,addr.type=unix,addr.path={path}"


def nd_dgram_inet(local_port: int, remote_port: int) -> str:
    return (
        "dgram,local.type=inet,local.host=127.0.0.1,"
        f"local.port={local_port},remote.type=inet,remote.host=127.0.0.1,remote.port={remote_port}"
    )


def nd_dgram_unix(local: Path, remote: Path) -> str:
    return f"dgram,local.type=unix,local.path={local},remote.type=unix,remote.path={remote}"


def ping_env(peers: Iterable[Guest], **kw: object) -> dict[str, object]:
    """Kernel arguments for a guest that pings ``peers`` (see init.sh for the names)."""
    env: dict[str, object] = {"fr_action": "ping", "fr_peer": ",".join(p.ip for p in peers)}
    env.update({f"fr_{k}": v for k, v in kw.items()})
    return env


def expect_clean_pings(pinger: Guest, peers: list[Guest], count: int, timeout: float = 45) -> None:
    """Assert one measured ping run per peer, each with every echo answered (0% loss)."""
    results = pinger.wait_results(len(peers), timeout)
    reach = {r["peer"]: r for r in pinger.results("reach")}
    for peer in peers:
        got = [r for r in results if r["peer"] == peer.ip]
        assert got, f"no ping result for {peer.name} ({peer.ip})\n{pinger.tail()}"
        r = got[0]
        assert reach.get(peer.ip, {}).get("ok") == "1", (
            f"{peer.name} never answered\n{pinger.tail()}"
        )
        assert (r["sent"], r["received"], r["loss"]) == (str(count), str(count), "0"), (
            f"{pinger.name} -> {peer.name}: {r}\n{pinger.tail()}"
        )

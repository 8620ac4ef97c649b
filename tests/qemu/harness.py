"""Start qemu guests and fastrelay processes, watch their logs, and always kill them by PID.

A test builds ``-netdev`` strings with the helpers at the bottom, starts guests with
:meth:`Lab.guest` and relays with :meth:`Lab.relay`, and waits for ``FR-`` markers that
the guest's ``/init`` (init.sh) prints on its serial console.  :class:`Lab` is a context
manager: everything it started is killed on exit, whether the test passed or not.  A guest
may have several NICs (:class:`Nic`), and a Lab with an :class:`Account` runs every guest
and relay under that uid (the lab test).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
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


@dataclasses.dataclass(frozen=True)
class Account:
    """An unprivileged uid/gid for guests and relays (the lab test: nobody/nogroup)."""

    uid: int
    gid: int

    def popen_kw(self) -> dict[str, object]:
        """subprocess.Popen arguments that start a child under this account, no extra groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


NOBODY = Account(65534, 65534)

# How a relay is started under an Account.  Not by exec'ing the interpreter as that uid:
# Python may live where only root can read (here: pyenv under /root, mode 0700).  The
# child starts as root, imports fastrelay, every one of its modules and uvloop (so that
# nothing of them is imported later, when their files may be out of reach), drops to the
# account for good, and only then parses its arguments, reads the config and opens a
# socket.  argv: UID GID FASTRELAY-ARGS...
_RUN_AS = """\
import importlib, os, pkgutil, sys
import uvloop, fastrelay
for mod in pkgutil.walk_packages(fastrelay.__path__, "fastrelay."):
    if mod.name != "fastrelay.__main__":  # importing it would run the CLI
        importlib.import_module(mod.name)
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
from fastrelay.cli import main
sys.exit(main(sys.argv[3:]))
"""


def process_ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid (real, effective, saved, fs) and Groups lines of /proc/PID/status."""
    out: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
    return out


@contextlib.contextmanager
def account_workdir(account: Account | None, fallback: Path) -> Iterator[Path]:
    """A folder the account owns, removed afterwards; ``fallback`` when there is no account.

    pytest's tmp_path sits under /tmp/pytest-of-root (mode 0700), which nobody cannot
    enter, so the unprivileged processes get a fresh folder of their own in /tmp.
    """
    if account is None:
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix="fastrelay-lab-"))
    try:
        os.chown(path, account.uid, account.gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def image_copy(image: GuestImage, dest: Path) -> GuestImage:
    """The image's kernel and initramfs copied into ``dest``: the cache under root's home
    is not readable by an unprivileged qemu (files stay root's, mode 0644)."""
    kernel, initrd = dest / "vmlinuz", dest / "initramfs.gz"
    shutil.copyfile(image.kernel, kernel)
    shutil.copyfile(image.initrd, initrd)
    for f in (kernel, initrd):
        f.chmod(0o644)
    return dataclasses.replace(image, kernel=kernel, initrd=initrd)


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


def _next_mac() -> str:
    n = next(_mac_seq) + (os.getpid() & 0xFF) * 256
    return f"52:54:00:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"


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


@dataclasses.dataclass(frozen=True)
class Nic:
    """One NIC of a guest with several: its -netdev string (no ``id=``), ADDR/LEN and MAC."""

    netdev: str
    ip: str
    mac: str


class Guest:
    """One qemu guest: its process, its serial log and its role arguments.

    ``netdev`` is one -netdev string (eth0 gets ``ip`` and ``mac``, or a MAC of its own),
    or a list of :class:`Nic` for a guest with several NICs (a router): init.sh then finds
    each NIC by its MAC and gives it its address (``fr_ifN`` kernel arguments).
    """

    def __init__(
        self,
        name: str,
        image: GuestImage,
        netdev: str | Sequence[Nic],
        workdir: Path,
        *,
        ip: str | None = None,
        nic: str = "virtio-net-pci",
        env: dict[str, object] | None = None,
        mac: str | None = None,
        account: Account | None = None,
    ) -> None:
        self.name = name
        self.account = account
        if isinstance(netdev, str):
            if ip is None:
                raise ValueError(f"guest {name}: one netdev needs ip=")
            # A replacement guest passes its predecessor's MAC so peers' ARP entries stay valid.
            nics = [Nic(netdev, ip, mac or _next_mac())]
            words: dict[str, object] = {"fr_ip": ip}
        else:
            if ip is not None or mac is not None or not netdev:
                raise ValueError(f"guest {name}: with a list of Nic, give ip and mac per NIC")
            nics = list(netdev)
            words = {f"fr_if{i}": f"{n.ip},{n.mac}" for i, n in enumerate(nics)}
        self.nics = nics
        self.ip_cidr = nics[0].ip
        self.ip = self.ip_cidr.split("/")[0]
        self.mac = nics[0].mac
        self.log = workdir / f"{name}.serial.log"
        self.qemu_log = workdir / f"{name}.qemu.log"
        words = {**words, "fr_timeout": 120, **(env or {})}
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
        ]
        for i, n in enumerate(nics):
            # romfile= : no PXE option ROM to load, the guest boots from -kernel anyway.
            self.argv += ["-netdev", f"{n.netdev},id=n{i}"]
            self.argv += ["-device", f"{nic},netdev=n{i},mac={n.mac},romfile="]
        self.proc: subprocess.Popen | None = None
        self._results_seen = 0

    def start(self) -> Guest:
        self.log.write_text("")
        kw = self.account.popen_kw() if self.account else {}
        if self.account:
            # qemu opens the serial log itself, as the account.
            os.chown(self.log, self.account.uid, self.account.gid)
        with open(self.qemu_log, "w") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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
    """A fastrelay process (``python -m fastrelay ARGS``), output to a log file.

    With an ``account`` it runs as that uid (see ``_RUN_AS``).  With a ``cwd`` it runs
    there, so that relative socket paths in a config land there.
    """

    def __init__(
        self,
        args: list[str],
        workdir: Path,
        name: str = "relay",
        verbose: bool = True,
        account: Account | None = None,
        cwd: Path | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.command = command  # another relay with fastrelay's CLI (e.g. netrelay)
        self.verbose = verbose
        self.account = account
        self.cwd = cwd
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def _argv(self) -> tuple[list[str], dict[str, object]]:
        """The command line and extra Popen arguments for this relay."""
        kw: dict[str, object] = {}
        if self.cwd is not None:
            # Elsewhere than here, a relative PYTHONPATH would miss this fastrelay.
            spec = importlib.util.find_spec("fastrelay")
            assert spec is not None and spec.origin is not None
            root = str(Path(spec.origin).resolve().parents[1])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            kw = {"env": env, "cwd": self.cwd}
        if self.account is None:
            command = self.command if self.command is not None else relay_command(self.verbose)
            return [*command, *self.args], kw
        if self.command is not None or os.environ.get("FASTRELAY_QEMU_RELAY"):
            raise HarnessError("only fastrelay can be run under an account "
                               "(another relay was named: command= or FASTRELAY_QEMU_RELAY)")
        uid, gid = str(self.account.uid), str(self.account.gid)
        verbose = ["-vv"] if self.verbose else []
        return [sys.executable, "-c", _RUN_AS, uid, gid, *verbose, *self.args], kw

    def start(self) -> Relay:
        self.starts += 1
        argv, kw = self._argv()
        with open(self.log, "a") as out:
            out.write(f"--- start {self.starts}: fastrelay {' '.join(self.args)}\n")
            out.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw
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

    def __init__(
        self,
        image: GuestImage,
        workdir: Path,
        relay_verbose: bool = True,
        account: Account | None = None,
    ) -> None:
        self.image = image
        self.workdir = workdir
        self.relay_verbose = relay_verbose
        self.account = account  # every guest and relay runs as this account when set
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
        netdev: str | Sequence[Nic],
        *,
        image: GuestImage | None = None,
        ip: str | None = None,
        start: bool = True,
        **kw,
    ) -> Guest:
        if isinstance(netdev, str) and ip is None:
            ip = self.next_ip()
        g = Guest(
            name, image or self.image, netdev, self.workdir, ip=ip, account=self.account, **kw
        )
        self.guests.append(g)
        return g.start() if start else g

    def relay(
        self, *args: object, name: str = "relay", start: bool = True, cwd: Path | None = None,
        command: list[str] | None = None,
    ) -> Relay:
        r = Relay(
            [str(a) for a in args],
            self.workdir,
            name=name,
            verbose=self.relay_verbose,
            account=self.account,
            cwd=cwd,
            command=command,
        )
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


def routing_env(routes: Iterable[tuple[str, str]], forward: bool = False) -> dict[str, object]:
    """Kernel arguments for static routes, each (DEST/LEN or "default", GATEWAY), and for
    IPv4 forwarding (a router)."""
    env: dict[str, object] = {f"fr_route{i}": f"{d},{via}" for i, (d, via) in enumerate(routes)}
    if forward:
        env["fr_forward"] = 1
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

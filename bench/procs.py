"""Starts, watches and stops the processes of one measurement, always by PID and within time limits."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
TASKSET = shutil.which("taskset")


class BenchError(RuntimeError):
    """A measurement could not be made; the message says which process and why."""


class Proc:
    """One child process with stdout/stderr in files, so a chatty child never blocks on a pipe.

    stdin is a pipe kept open for the whole run: the load generators wait for
    a line on it (the start signal), and a relay must not see stdin at EOF
    (netrelay's hub mode spins a core then).
    """

    def __init__(self, name: str, argv: list[str], workdir: Path, cpu: int | None = None,
                 cwd: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self._out_path = workdir / f"{name}.out"
        self._err_path = workdir / f"{name}.err"
        # Files, not pipes, and open for the child's whole life: stop() closes them.
        self._out: IO[bytes] = open(self._out_path, "wb")  # noqa: SIM115
        self._err: IO[bytes] = open(self._err_path, "wb")  # noqa: SIM115
        if cpu is not None:
            # taskset execs the command: the PID we watch is the relay's own, and
            # the affinity is in place before the program starts any thread.
            argv = [TASKSET, "-c", str(cpu), *argv] if TASKSET else argv
        self.argv = argv
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self._out,
                                      stderr=self._err, cwd=cwd)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        """True while the process runs; a zombie counts as ended but stays unreaped.

        Not reaping keeps /proc/PID/stat readable, so the CPU time of a relay
        that exits by itself (point to point at end of stream) is not lost.
        """
        if self.popen.returncode is not None:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def go(self) -> None:
        """Send the start signal (one line on stdin)."""
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(b"go\n")
            self.popen.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} exited before the start: {self.stderr_tail()}")

    def wait(self, timeout: float) -> bool:
        """Wait up to @timeout s for the process to end; True if it did."""
        try:
            self.popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def cpu_seconds(self) -> float | None:
        """utime + stime of the process (all its threads) from /proc/PID/stat, or None if gone."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # After the comm field: state is field 3, utime 14, stime 15 (proc(5)).
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM (results still get printed), then SIGKILL after @grace s; reap; close files."""
        if self.popen.returncode is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self.wait(grace):
                self.popen.kill()
                self.popen.wait(timeout=5)
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        self._out.close()
        self._err.close()

    def stderr_tail(self, limit: int = 600) -> str:
        """The end of what the process wrote to stderr, for error messages."""
        if not self._err.closed:
            self._err.flush()
        text = self._err_path.read_bytes().decode(errors="replace").strip()
        return text[-limit:] if text else f"(no stderr; exit {self.popen.returncode})"

    def result(self) -> dict[str, Any]:
        """The JSON object on the last line of stdout."""
        if not self._out.closed:
            self._out.flush()
        lines = self._out_path.read_bytes().decode(errors="replace").strip().splitlines()
        for line in reversed(lines):
            if line.startswith("{"):
                res: dict[str, Any] = json.loads(line)
                return res
        raise BenchError(f"{self.name} printed no result: {self.stderr_tail()}")


def wait_until(what: str, check: Callable[[], bool], timeout: float,
               watch: list[Proc] | None = None) -> None:
    """Poll @check every few ms until true; fail after @timeout s or if a watched process died."""
    end = time.monotonic() + timeout
    delay = 0.002
    while not check():
        for p in watch or []:
            if not p.alive():
                raise BenchError(f"{p.name} exited while waiting for {what}: {p.stderr_tail()}")
        if time.monotonic() >= end:
            raise BenchError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _proc_net_ports(files: list[str], state: str | None) -> set[int]:
    """Local ports in /proc/net/{tcp,udp}[6] tables, optionally only in one socket state."""
    ports: set[int] = set()
    for name in files:
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and (state is None or cols[3] == state):
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def tcp_listening(port: int) -> bool:
    """True if some socket listens on TCP @port (read from /proc: no probe connection).

    A probe connect() would be taken as a client by a one-shot listener or a hub.
    """
    return port in _proc_net_ports(["tcp", "tcp6"], "0A")


def tcp_connected(port: int) -> bool:
    """True if some established TCP socket has local @port (a listener took a client)."""
    return port in _proc_net_ports(["tcp", "tcp6"], "01")


def udp_bound(port: int) -> bool:
    """True if some socket is bound to UDP @port."""
    return port in _proc_net_ports(["udp", "udp6"], None)


def unix_listening(path: str) -> bool:
    """True if a unix stream socket listens on @path (/proc/net/unix flag __SO_ACCEPTCON)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return os.path.exists(path)
    for line in lines:
        cols = line.split()
        if len(cols) >= 8 and cols[7] == path and int(cols[3], 16) & 0x10000:
            return True
    return False


class PortPool:
    """Hands out free local ports, never the same one twice in a run.

    Ports come from 20000-32767, below Linux's default ephemeral range, so the
    outgoing connections of one point cannot take a port named by another.
    """

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._rng = random.Random(os.getpid() ^ time.time_ns())

    def take(self) -> int:
        """A port free for TCP and UDP on every address family."""
        for _ in range(500):
            port = self._rng.randrange(20000, 32768)
            if port not in self._used and self._free(port):
                self._used.add(port)
                return port
        raise BenchError("no free local port found")

    @staticmethod
    def _free(port: int) -> bool:
        """Bind TCP and UDP on [::] dual-stack (covers 0.0.0.0 too); release at once."""
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            try:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.bind(("::", port))
            except OSError:
                return False
            finally:
                s.close()
        return True

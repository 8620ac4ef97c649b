"""Out of descriptors (RLIMIT_NOFILE=64): the relay idles, logs little, still serves /metrics."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import wait_until
from peers import LOOP4, StreamPeer, free_port, make_frame, track

NOFILE = 64
ATTEMPTS = 300


class LimitedDaemon:
    """`fastrelay --config FILE` with RLIMIT_NOFILE lowered in the child; stderr collected."""

    def __init__(self, config: str, nofile: int) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen([sys.executable, "-m", "fastrelay", "--config", config],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     # setrlimit only: safe between fork and exec.
                                     stderr=subprocess.PIPE, preexec_fn=limit)  # noqa: PLW1509
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far (/proc/PID/stat, fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


@pytest.fixture
def limited_daemon(tmp_path):  # type: ignore[no-untyped-def]
    started: list[LimitedDaemon] = []

    def start(text: str, nofile: int = NOFILE) -> LimitedDaemon:
        path = tmp_path / "fastrelay.toml"
        path.write_text(text)
        daemon = LimitedDaemon(str(path), nofile)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.mark.slow
def test_at_the_descriptor_limit_the_relay_idles_and_still_answers(limited_daemon) -> None:  # type: ignore[no-untyped-def]
    hub, mport = free_port(), free_port()
    daemon = limited_daemon(f"""
[daemon]
metrics = "{LOOP4}:{mport}"

[hub.h]
listen = "{LOOP4}:{hub}"
""")
    metrics = f"http://{LOOP4}:{mport}/metrics"

    def answering() -> bool:
        try:
            return _get(metrics)[0] == 200
        except OSError:
            return False
    wait_until(answering, 10, "the daemon's metrics")

    clients = []
    for _ in range(ATTEMPTS):
        sock = track(socket.socket())
        sock.setblocking(False)
        sock.connect_ex((LOOP4, hub))
        clients.append(sock)
    wait_until(lambda: any("Too many open files" in line for line in daemon.lines), 10,
               "the relay to reach its limit")
    lines_at_limit = len(daemon.lines)

    # At the limit: next to no CPU (it used to spin: 156 ticks in 2 s) ...
    before, began = daemon.cpu_seconds(), time.monotonic()
    time.sleep(2.0)
    share = (daemon.cpu_seconds() - before) / (time.monotonic() - began)
    assert share < 0.05, f"{share:.1%} CPU at the descriptor limit"
    # ... few log lines (it used to write 51,787 in 2 s) ...
    assert len(daemon.lines) - lines_at_limit <= 5, daemon.lines[lines_at_limit:]
    # ... and /metrics answers, again and again (it used to be reset).
    for _ in range(3):
        status, text = _get(metrics)
        assert status == 200 and "fastrelay_peers_connected" in text

    # Descriptors free again: the relay accepts and relays once more.
    for sock in clients:
        sock.close()
    a, b = (StreamPeer(socket.create_connection((LOOP4, hub), timeout=10)) for _ in "ab")
    frame = make_frame(200, 1)

    def relayed() -> bool:
        a.send([frame])
        try:
            return frame in b.recv(1, timeout=0.5)
        except (AssertionError, TimeoutError):
            return False
    wait_until(relayed, 15, "a frame through the hub after the descriptors came back")
    assert any("accepting again" in line for line in daemon.lines), daemon.lines[-20:]
    assert len(daemon.lines) <= 60, "\n".join(daemon.lines)
    assert not any("Traceback" in line for line in daemon.lines)

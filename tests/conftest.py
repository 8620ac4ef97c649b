"""Shared fixtures: the relay run as a subprocess (the real CLI) or in-process (on a thread)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fastrelay.relay import Relay, RelayOptions  # noqa: E402
from fastrelay.targets import parse_listen, parse_target  # noqa: E402


@pytest.fixture(autouse=True)
def _close_peer_sockets() -> Iterator[None]:
    from peers import close_all

    yield
    close_all()


class RelayProcess:
    """`python -m fastrelay ARGS` with its stderr captured; always killed by PID."""

    def __init__(self, args: list[str], stdin: int | None = subprocess.DEVNULL,
                 stdout: int | None = subprocess.DEVNULL) -> None:
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "fastrelay", *args],
                                     stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        self._stderr = ""

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    @property
    def stderr(self) -> str:
        """Everything the relay wrote to stderr (stops it first if still running)."""
        self.stop()
        return self._stderr

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self._stderr = self.proc.stderr.read().decode()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


@pytest.fixture
def relay_process() -> Iterator:
    """Factory: start a relay subprocess; stopped at teardown."""
    started: list[RelayProcess] = []

    def start(*args: str, **kwargs: int) -> RelayProcess:
        proc = RelayProcess(list(args), **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


class InProcessRelay:
    """A Relay on uvloop in a thread of this process (same code path as the CLI)."""

    def __init__(self, args: list[str], listen: str | None, options: RelayOptions) -> None:
        import uvloop

        targets = [parse_target(a) for a in args]
        if listen is not None:
            targets.insert(0, parse_listen(listen))
        self.loop = uvloop.new_event_loop()
        self.relay = Relay(targets, options, point_to_point=listen is None)
        self.status: int | None = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        if not self.started.wait(10):
            raise TimeoutError("relay did not start")
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> int:
            try:
                await self.relay.start()
            finally:
                self.started.set()
            try:
                return await self.relay.wait()
            finally:
                self.relay.close()
        try:
            self.status = self.loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.started.set()
        finally:
            self.loop.close()

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run fn(*args) on the relay's loop and return its result."""
        done = threading.Event()
        box: list[object] = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn(*args)), done.set()))
        assert done.wait(5)
        return box[0]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.relay.stop, 0)
            self.thread.join(10)


@pytest.fixture
def inprocess_relay() -> Iterator:
    """Factory: start a Relay in-process; stopped at teardown."""
    started: list[InProcessRelay] = []

    def start(*args: str, listen: str | None = None, **options: object) -> InProcessRelay:
        relay = InProcessRelay(list(args), listen, RelayOptions(**options))  # type: ignore[arg-type]
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_bound(port: int, kind: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until something has bound port (our own bind attempt fails with EADDRINUSE)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing bound port {port} within {timeout}s")
        time.sleep(0.02)


@pytest.fixture(params=["subprocess", "inprocess"])
def relay(request, relay_process, inprocess_relay):  # type: ignore[no-untyped-def]
    """Factory over both ways of running the relay: start(*args, listen=None)."""
    if request.param == "inprocess":
        return inprocess_relay

    def start(*args: str, listen: str | None = None, **options: object) -> RelayProcess:
        argv = (["-l", listen] if listen is not None else []) + list(args)
        if options.get("reconnect"):
            argv.insert(0, "--reconnect")
        return relay_process(*argv)
    return start


class DaemonProcess:
    """`python -m fastrelay --config FILE` with our own $NOTIFY_SOCKET, as systemd would run it.

    The notify socket tells when the daemon is ready, reloading or stopping (sd_notify);
    stderr is collected by a thread so a chatty daemon never blocks on a full pipe.
    """

    def __init__(self, config: str, notify_path: str, args: tuple[str, ...] = ()) -> None:
        import socket

        self.config = config
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        self.proc = subprocess.Popen([sys.executable, "-m", "fastrelay", "--config", config,
                                      *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def expect_notify(self, state: str = "READY=1", timeout: float = 10.0) -> list[str]:
        """Wait for a notification containing state; every notification seen until then."""
        import socket

        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {state!r} from the daemon (saw {seen}); "
                                     f"log:\n{self.log}")
            self.notify.settimeout(min(left, 0.5))
            try:
                message = self.notify.recv(4096).decode()
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited ({self.proc.returncode}) before "
                                         f"{state!r}; log:\n{self.log}") from None
                continue
            seen.append(message)
            if state in message.split("\n"):
                return seen

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait for a log line containing text; that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {text!r}; log:\n{self.log}")
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        status = self.proc.wait(timeout)
        self._reader.join(5)
        return status

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.notify.close()
        return self.proc.returncode


@pytest.fixture
def daemon_process(tmp_path) -> Iterator:  # type: ignore[no-untyped-def]
    """Factory: write a config text to a file, run the daemon on it until READY=1.

    start(text, *args, ready=True) -> DaemonProcess; the file is `proc.config`.
    Every daemon is stopped (SIGTERM, then killed) at teardown.
    """
    started: list[DaemonProcess] = []

    def start(text: str, *args: str, ready: bool = True) -> DaemonProcess:
        n = len(started)
        config = os.path.join(os.fspath(tmp_path), f"fastrelay{n}.toml")
        with open(config, "w") as f:
            f.write(text)
        proc = DaemonProcess(config, os.path.join(os.fspath(tmp_path), f"notify{n}.sock"),
                             tuple(args))
        started.append(proc)
        if ready:
            proc.expect_notify("READY=1")
        return proc

    yield start
    for proc in started:
        proc.stop()

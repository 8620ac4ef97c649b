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

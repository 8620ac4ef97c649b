"""Reconnect and restart loops: no storm against a peer that closes at once, no silent death."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from peers import LOOP4, StreamListener, free_port, track

from fastrelay.errors import StartError
from fastrelay.relay import Relay, RelayOptions
from fastrelay.targets import parse_target


class _Lines(logging.Handler):
    """Every line the fastrelay logger writes, formatted as the daemon would (one event)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.extend(text.splitlines() or [""])


@pytest.fixture
def log_lines() -> Iterator[_Lines]:
    logger = logging.getLogger("fastrelay")
    handler = _Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class _SlamListener:
    """A TCP peer that accepts and closes each connection at once; records when."""

    def __init__(self) -> None:
        self.sock = track(socket.socket())
        self.sock.bind((LOOP4, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)


def test_peer_that_accepts_and_closes_is_retried_with_growing_delays(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    # The back-off used to start over at every successful connect: a peer that accepted
    # and closed at once was connected to every `initial` seconds, for ever.
    slam, good = _SlamListener(), StreamListener()
    try:
        inprocess_relay(f"{LOOP4}:{slam.port}", f"{LOOP4}:{good.port}", reconnect=True,
                        backoff={"initial": 0.05, "maximum": 0.8, "jitter": 0.0})
        good.accept()
        time.sleep(3.0)
    finally:
        slam.close()
    times = slam.accepted
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 4 <= len(times) <= 10, f"{len(times)} connections in 3 s: {gaps}"
    assert gaps[-1] >= 0.6, gaps


def test_connection_that_lasted_starts_the_backoff_over() -> None:
    from fastrelay import defaults

    assert 1.0 <= defaults.RECONNECT_STABLE_AFTER <= 10.0
    # The defaults bring a link back within a second of its peer (lima: 500 ms).
    assert defaults.RECONNECT_MAX <= 0.5 and defaults.RECONNECT_INITIAL <= 0.1


# -- fault injection: every step of connect and start --------------------------------------

_STREAM_FILE = "endpoints/stream.py"




def _inject(monkeypatch, loop: asyncio.AbstractEventLoop, step: str, failures: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Make step fail while failures[0] > 0 (counting down), then behave."""
    from fastrelay.endpoints import stream
    from fastrelay.relay import Relay

    def should_fail() -> bool:
        # Only the stream client's calls: the datagram endpoint shares some of the steps.
        # (sock_connect and the stream module's StreamPort are the client's alone.) The
        # caller, or its caller: getaddrinfo() is called through endpoints.base.resolve().
        caller = sys._getframe(2)
        callers = [f.f_code.co_filename.replace("\\", "/") for f in (caller, caller.f_back)
                   if f is not None]
        if failures[0] > 0 and (any(c.endswith(_STREAM_FILE) for c in callers)
                                or step in ("sock_connect", "port")):
            failures[0] -= 1
            return True
        return False

    if step == "socket":
        real_socket = socket.socket

        class Faulty(real_socket):  # type: ignore[misc, valid-type]
            def __init__(self, *args: object, **kwargs: object) -> None:
                if should_fail():
                    raise OSError(errno.EMFILE, "Too many open files")
                super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(stream.socket, "socket", Faulty)
    elif step in ("sock_connect", "getaddrinfo"):
        real = getattr(loop, step)

        async def faulty(*args: object, **kwargs: object) -> object:
            if should_fail():
                raise RuntimeError(f"injected {step} failure")
            return await real(*args, **kwargs)
        monkeypatch.setattr(loop, step, faulty)
    elif step == "port":
        real_port = stream.StreamPort

        def port(*args: object, **kwargs: object) -> object:
            if should_fail():
                raise MemoryError()
            return real_port(*args, **kwargs)
        monkeypatch.setattr(stream, "StreamPort", port)
    elif step == "attach":
        real_attach = Relay.attach

        def attach(self: Relay, *args: object) -> None:
            if should_fail():
                raise StartError("tcp", "cannot watch it: No space left on device")
            real_attach(self, *args)  # type: ignore[arg-type]
        monkeypatch.setattr(Relay, "attach", attach)
    else:
        raise AssertionError(step)


async def _connection_kept(loop: asyncio.AbstractEventLoop, peer: socket.socket) -> socket.socket:
    """The next connection from the relay that it keeps (failed attempts are dropped at once:
    a port or attach failure comes after the TCP handshake)."""
    deadline = loop.time() + 5
    while True:
        conn, _ = await asyncio.wait_for(loop.sock_accept(peer), deadline - loop.time())
        try:
            data = await asyncio.wait_for(loop.sock_recv(conn, 1), 0.3)
        except TimeoutError:
            return conn             # open and quiet: the relay kept it
        except OSError:
            data = b""
        conn.close()
        assert not data


@pytest.mark.parametrize("when", ["start", "reconnect"])
@pytest.mark.parametrize("step", ["socket", "getaddrinfo", "sock_connect", "port", "attach"])
def test_client_survives_a_failure_at_every_step(monkeypatch, log_lines, step: str,  # type: ignore[no-untyped-def]
                                                 when: str) -> None:
    """Any exception while connecting is one log line and a retry, at start and later."""
    peer = track(socket.socket())
    peer.bind((LOOP4, 0))
    peer.listen(8)
    peer.setblocking(False)
    udp = free_port(kind=socket.SOCK_DGRAM)
    targets = [parse_target(f"{LOOP4}:{peer.getsockname()[1]}"),
               parse_target(f"{udp}:{LOOP4}:{free_port(kind=socket.SOCK_DGRAM)}")]
    options = RelayOptions(reconnect=True, backoff={"initial": 0.02, "maximum": 0.1})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        relay = Relay(targets, options, point_to_point=True)
        failures = [3]
        if when == "start":
            _inject(monkeypatch, loop, step, failures)
        try:
            await relay.start()
            conn = await _connection_kept(loop, peer)
            if when == "reconnect":
                _inject(monkeypatch, loop, step, failures)
                conn.close()            # the relay loses its connection and reconnects
                conn = await _connection_kept(loop, peer)
            conn.close()
            assert failures == [0]
        finally:
            relay.close()

    asyncio.run(main())
    text = "\n".join(log_lines.lines)
    assert "Traceback" not in text, text
    assert sum("retrying" in line for line in log_lines.lines) >= 1, text


def test_daemon_link_start_failing_in_any_way_is_retried(monkeypatch, log_lines) -> None:  # type: ignore[no-untyped-def]
    """A link whose start raises something else than StartError is restarted, not failed."""
    from fastrelay import defaults
    from fastrelay.config import parse_config
    from fastrelay.daemon import LinkRunner

    monkeypatch.setattr(defaults, "LINK_RESTART_INITIAL", 0.05)
    port = free_port()
    spec = parse_config(f'[hub.h]\nlisten = "{LOOP4}:{port}"\n').links["h"]
    real_start = Relay.start
    faults: list[BaseException] = [OSError(errno.EMFILE, "Too many open files"),
                                   RuntimeError("injected")]

    async def start(self: Relay) -> None:
        if faults:
            raise faults.pop(0)
        await real_start(self)
    monkeypatch.setattr(Relay, "start", start)

    async def main() -> str:
        runner = LinkRunner(spec)
        runner.start()
        try:
            for _ in range(200):
                if runner.state == "up":
                    break
                await asyncio.sleep(0.02)
            return runner.state
        finally:
            await runner.stop(0.1)

    assert asyncio.run(main()) == "up"
    text = "\n".join(log_lines.lines)
    assert "Traceback" not in text, text
    assert sum("starting the link again" in line for line in log_lines.lines) == 2, text


# -- acceptance: a peer killed and restarted, the link back within a second -----------------

_PEER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4)
print("listening", time.monotonic(), flush=True)
c, _ = s.accept()
print("accepted", time.monotonic(), flush=True)
while c.recv(65536):
    pass
"""


class _PeerProcess:
    """A qemu `socket,listen=` stand-in in a process of its own: says when it listens and
    when the relay connected (CLOCK_MONOTONIC, the same in every process)."""

    def __init__(self, port: int) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", _PEER, str(port)],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def event(self, name: str, timeout: float) -> float:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no '{name}' from the peer within {timeout}s"
        word, stamp = self.proc.stdout.readline().split()
        assert word == name
        return float(stamp)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.mark.slow
def test_link_is_back_within_a_second_of_its_peer_with_default_settings(daemon_process) -> None:  # type: ignore[no-untyped-def]
    port, udp = free_port(), free_port(kind=socket.SOCK_DGRAM)
    peer = _PeerProcess(port)
    try:
        peer.event("listening", 10)
        # Nothing but the endpoints: the reconnect defaults are under test.
        daemon_process(f'[link.l]\nendpoints = ["{LOOP4}:{port}", '
                       f'"{udp}:{LOOP4}:{free_port(kind=socket.SOCK_DGRAM)}"]\n')
        peer.event("accepted", 10)
        delays = []
        for outage in (0.5, 1.0, 2.0, 3.0, 5.0):
            time.sleep(1.0)                       # the link is up a while
            peer.kill()
            time.sleep(outage)
            peer = _PeerProcess(port)
            back = peer.event("listening", 10)
            delays.append(peer.event("accepted", 10) - back)
    finally:
        peer.kill()
    assert max(delays) <= 1.0, [f"{d:.2f}" for d in delays]

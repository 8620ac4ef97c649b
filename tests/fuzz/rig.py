"""An in-process Hub over real sockets, driven by hand until quiet (runs in the fuzz worker).

The rig owns both ends of every socket: the relay's end goes into a port, the test's end
sends or is a sink that collects what the relay passed on. pump() calls Hub.poll() as the
control plane would, and drains the sinks, until nothing is left anywhere: no unread input
at a source, no backlog in a port, nothing unread at a sink.
"""

from __future__ import annotations

import gc
import select
import socket
import struct
import time
from typing import Any

from fastrelay._core import DatagramPort, Hub, Port, StreamPort, TapPort
from fuzz.wire import FRAME_MAX, VNET_HDR_LEN

# Socket buffers of the rig: large enough that a whole case fits in flight. As root,
# SO_*BUFFORCE sets them without touching net.core.[rw]mem_max (no global state to restore);
# otherwise they are capped there and rig_capacity() says how much a case may send at once.
BUFFER = 64 << 20
# What the kernel must grant (it doubles the request): a UDP sink is sent a whole stream read
# of tiny frames per poll, ~15,000 datagrams of ~800 bytes of accounting each, four times.
ROOM_NEEDED = 64 << 20
SO_MEMINFO = 55               # <asm-generic/socket.h>: struct of sk_meminfo counters
SK_MEMINFO_DROPS = 8          # index of the packets-dropped counter in it


def grow(sock: socket.socket, *opts: str) -> None:
    for opt in opts:
        force = getattr(socket, f"SO_{opt}BUFFORCE", None) or {"RCV": 33, "SND": 32}[opt]
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, f"SO_{opt}BUF"), BUFFER)


def rig_capacity() -> int:
    """Bytes (kernel accounting, payload plus overhead) one rig socket can hold unread."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        grow(s, "RCV")
        return int(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped at this socket (receive buffer full)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * 9)
    return int(struct.unpack("9I", raw)[SK_MEMINFO_DROPS])


class Sink:
    """The test's end of a socket a port writes to; collects what arrives."""

    kind = ""

    def __init__(self, name: str, sock: socket.socket, port: Port) -> None:
        self.name = name
        self.sock = sock
        self.port = port
        self.items: list[Any] = []
        self.error: str | None = None
        sock.setblocking(False)

    def drain(self) -> bool:
        """Read everything there is; True if anything was read."""
        got = False
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return got
            if not data and self.kind == "stream":
                return got
            got = True
            self.take(data)

    def take(self, data: bytes) -> None:
        self.items.append(data)


class StreamSink(Sink):
    """A stream peer: reassembles the qemu framing; a bad length there is the relay's fault."""

    kind = "stream"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.buf = bytearray()

    def take(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        while len(self.buf) - pos >= 4 and self.error is None:
            (n,) = struct.unpack_from(">I", self.buf, pos)
            if not 1 <= n <= FRAME_MAX:
                self.error = f"{self.name}: the relay sent a record of length {n}"
                break
            if len(self.buf) - pos < 4 + n:
                break
            self.items.append(bytes(self.buf[pos + 4:pos + 4 + n]))
            pos += 4 + n
        del self.buf[:pos]


class DgramSink(Sink):
    kind = "dgram"


class TapSink(Sink):
    """A tap's side of a socketpair: every message is a 10-byte header, then a frame."""

    kind = "tap"

    def take(self, data: bytes) -> None:
        if len(data) < VNET_HDR_LEN:
            self.error = f"{self.name}: a message of {len(data)} bytes, shorter than a header"
            return
        self.items.append((data[:VNET_HDR_LEN], data[VNET_HDR_LEN:]))


class Rig:
    """One hub, its ports, the test's sockets, and what happened to them."""

    def __init__(self) -> None:
        self.hub = Hub(on_close=self._closed)
        self.ports: list[Port] = []
        self.sinks: list[Sink] = []
        self.sockets: list[socket.socket] = []   # test ends and relay-end duplicates
        self.watched: list[socket.socket] = []   # datagram sockets whose drops are the rig's
        self.closed: list[tuple[str, str, bool]] = []
        self.problems: list[str] = []

    def _closed(self, port: Port, reason: str, fault: bool) -> None:
        self.closed.append((port.name, reason, fault))

    def keep(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def attach(self, port: Port) -> Port:
        self.ports.append(port)
        self.hub.add(port)
        return port

    # -- sinks: one of each way a port writes ---------------------------------------------

    def stream_sink(self, max_frame: int) -> StreamSink:
        relay_end, test_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        grow(relay_end, "SND")
        grow(test_end, "RCV")
        relay_end.setblocking(False)
        port = self.attach(StreamPort(relay_end.detach(), "stream sink", max_frame=max_frame))
        sink = StreamSink("stream sink", self.keep(test_end), port)
        self.sinks.append(sink)
        return sink

    def udp_sink(self, max_frame: int) -> DgramSink:
        test_end = self.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        test_end.bind(("127.0.0.1", 0))
        grow(test_end, "RCV")
        self.watched.append(test_end)
        relay_end = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        relay_end.bind(("127.0.0.1", 0))
        grow(relay_end, "SND")
        relay_end.setblocking(False)
        port = self.attach(DatagramPort(relay_end.detach(), "udp sink", family=socket.AF_INET,
                                        peer=test_end.getsockname(), max_frame=max_frame))
        sink = DgramSink("udp sink", test_end, port)
        self.sinks.append(sink)
        return sink

    def tap_sink(self, max_frame: int) -> TapSink:
        relay_end, test_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        grow(relay_end, "SND")
        grow(test_end, "RCV")
        relay_end.setblocking(False)
        port = self.attach(TapPort(relay_end.detach(), "tap sink", max_frame=max_frame))
        sink = TapSink("tap sink", self.keep(test_end), port)
        self.sinks.append(sink)
        return sink

    # -- driving ------------------------------------------------------------------------

    def _inputs_pending(self) -> bool:
        """Some open port's descriptor has unread input (or an event to report)."""
        fds = [p.fd for p in self.ports if not p.closed]
        if not fds:
            return False
        readable, _, _ = select.select(fds, [], [], 0)
        return bool(readable)

    def _quiet(self) -> bool:
        if any(p.queued_bytes for p in self.ports if not p.closed):
            return False
        if self._inputs_pending():
            return False
        socks = [s.sock for s in self.sinks]
        readable, _, _ = select.select(socks, [], [], 0)
        return not readable

    def pump(self, timeout: float = 20.0) -> None:
        """Poll the hub and drain the sinks until everything is quiet three times running.

        Loopback delivery finishes inside the sending syscall, so quiet is final; three
        looks, a millisecond apart, leave room for a softirq that ran late.
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:
            ready, _, _ = select.select([self.hub.fileno()], [], [], 0.001)
            if ready:
                self.hub.poll()
            moved = False
            for sink in self.sinks:
                moved |= sink.drain()
            if ready or moved or not self._quiet():
                quiet = 0
            else:
                quiet += 1
            if time.monotonic() > deadline:
                self.problems.append(f"not quiet after {timeout:.0f}s: "
                                     f"{[(p.name, p.queued_bytes, p.closed) for p in self.ports]}")
                return

    def send_all(self, sock: socket.socket, chunk: bytes) -> bool:
        """Send a byte-stream chunk, pumping whenever the socket is full; False once the
        relay has closed the connection (after a bad length: the rest is never read)."""
        view = memoryview(chunk)
        while view:
            try:
                n = sock.send(view)
            except BlockingIOError:
                self.pump()
                continue
            except (BrokenPipeError, ConnectionResetError):
                return False
            view = view[n:]
        return True

    # -- the end of a case ----------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """Everything the test checks, then the teardown (which frees the ports' memory)."""
        for sock in self.watched:
            drops = kernel_drops(sock)
            if drops:
                self.problems.append(f"rig socket {sock.getsockname()} dropped {drops} "
                                     f"datagrams: the rig's buffers are too small")
        out = {
            "sinks": {s.name: s.items for s in self.sinks},
            "sink_errors": [s.error for s in self.sinks if s.error],
            "stats": {p.name: p.stats() for p in self.ports},
            "extra": {p.name: extra_counters(p) for p in self.ports},
            "closed": list(self.closed),
            "problems": list(self.problems),
        }
        self.close()
        return out

    def close(self) -> None:
        """Close everything and free the ports now: a heap overrun shows here, under
        PYTHONMALLOC=debug, while the case that caused it is still running."""
        self.hub.close()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self.sinks.clear()
        self.ports.clear()
        self.hub = None  # type: ignore[assignment]
        gc.collect()


def extra_counters(port: Port) -> dict[str, int]:
    names = ("gro_messages", "gso_messages", "send_errors", "drop_gso", "csum_filled",
             "write_errors")
    return {n: int(getattr(port, n)) for n in names if hasattr(port, n)}

"""Emulated qemu peers for tests: datagram and stream endpoints speaking qemu's wire formats."""

from __future__ import annotations

import os
import queue
import random
import socket
import struct
import threading
import time

from reference import ReferenceReassembler, frame_stream

LOOP4 = "127.0.0.1"

# Every socket a peer opens, closed by the autouse fixture in conftest after each test.
OPEN_SOCKETS: list[socket.socket] = []


def track(sock: socket.socket) -> socket.socket:
    OPEN_SOCKETS.append(sock)
    return sock


def close_all() -> None:
    while OPEN_SOCKETS:
        OPEN_SOCKETS.pop().close()


def free_port(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (bound with port 0, then released)."""
    with socket.socket(family, kind) as s:
        s.bind(("::1" if family == socket.AF_INET6 else LOOP4, 0))
        return int(s.getsockname()[1])


# The source MAC of make_frame(): one guest's. Two peers of a hub sending with it look
# like two guests started with the same mac= (the relay logs a duplicate MAC).
PEER_MAC = b"\x02\x00\x00\x00\x00\x01"


def make_frame(size: int, seq: int = 0, rng: random.Random | None = None,
               src: bytes = PEER_MAC) -> bytes:
    """An Ethernet-looking frame of size bytes: broadcast dst, local src, seq, random tail."""
    assert size >= 14
    head = b"\xff" * 6 + src + b"\x88\xb5"
    body = struct.pack(">Q", seq) + (rng or random).randbytes(max(0, size - 22))
    return (head + body)[:size]


def random_frames(n: int, lo: int, hi: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [make_frame(rng.randint(lo, hi), i, rng) for i in range(n)]


class StreamPeer:
    """A qemu `socket,listen=/connect=` or `stream` peer: 4-byte big-endian length framing.

    Sends go through a sender thread of the peer's own, in order, so a test can send more
    than the socket buffers hold and read at the same time, as qemu does: the relay stops
    reading a peer whose receiver is backed up, so a blocking send-then-read would
    deadlock. A send error is raised by the next send(), flush() or close().
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = track(sock)
        self.rx = ReferenceReassembler()
        self.pending: list[bytes] = []
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._send_error: OSError | None = None

    def _send_loop(self) -> None:
        while True:
            data = self._outbox.get()
            try:
                if data is None:
                    return
                if self._send_error is None:
                    self.sock.sendall(data)
            except OSError as exc:
                self._send_error = exc
            finally:
                self._outbox.task_done()

    def _queue(self, data: bytes) -> None:
        if self._send_error is not None:
            raise self._send_error
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, daemon=True)
            self._sender.start()
        self._outbox.put(data)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything sent so far is in the kernel."""
        deadline = time.monotonic() + timeout
        while self._outbox.unfinished_tasks:
            if time.monotonic() > deadline:
                raise AssertionError("send did not complete")
            time.sleep(0.005)
        if self._send_error is not None:
            raise self._send_error

    @classmethod
    def connect(cls, addr: object, family: int = socket.AF_INET, timeout: float = 5.0) -> StreamPeer:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.connect(addr)
                return cls(sock)
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def send(self, frames: list[bytes]) -> None:
        self._queue(frame_stream(frames))

    def send_raw(self, data: bytes) -> None:
        self._queue(data)

    def recv(self, n: int, timeout: float = 5.0) -> list[bytes]:
        """Exactly n frames, or AssertionError after timeout with what arrived."""
        deadline = time.monotonic() + timeout
        while len(self.pending) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.pending)} of {n} frames in {timeout}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError(f"connection closed after {len(self.pending)} of {n} frames")
            self.pending += self.rx.feed_data(data)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def expect_silence(self, wait: float = 0.3) -> None:
        """No frame arrives within wait seconds."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return
        self.pending += self.rx.feed_data(data)
        raise AssertionError(f"unexpected data: {len(data)} bytes, frames {len(self.pending)}")

    def expect_closed(self, timeout: float = 5.0) -> None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return
            if not data:
                return

    def close(self) -> None:
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(5)
        self.sock.close()


class StreamListener:
    """A qemu `socket,listen=` peer waiting for the relay to connect."""

    def __init__(self, family: int = socket.AF_INET, host: str = LOOP4) -> None:
        self.sock = track(socket.socket(family, socket.SOCK_STREAM))
        self.sock.bind((host, 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]

    def accept(self, timeout: float = 5.0) -> StreamPeer:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        conn.settimeout(None)
        return StreamPeer(conn)

    def close(self) -> None:
        self.sock.close()


class DgramPeer:
    """A qemu `socket,udp=` / `dgram` peer: one frame per datagram, receives from anyone."""

    def __init__(self, family: int = socket.AF_INET, host: str = LOOP4, path: str | None = None,
                 peer: object = None) -> None:
        if path is not None:
            self.sock = track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            self.sock.bind(path)
        else:
            self.sock = track(socket.socket(family, socket.SOCK_DGRAM))
            self.sock.bind((host, 0))
            self.port = self.sock.getsockname()[1]
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        self.peer = peer

    def send(self, frames: list[bytes]) -> None:
        for f in frames:
            self.sock.sendto(f, self.peer)

    def recv(self, n: int, timeout: float = 5.0) -> list[bytes]:
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(out)} of {n} datagrams in {timeout}s")
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(1 << 17))
            except socket.timeout:
                continue
        return out

    def expect_silence(self, wait: float = 0.3) -> None:
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 17)
        except socket.timeout:
            return
        raise AssertionError(f"unexpected datagram of {len(data)} bytes")

    def close(self) -> None:
        self.sock.close()


def exchange_windowed(send, recv, frames: list[bytes], window: int = 32) -> list[bytes]:
    """Send frames window by window, receiving each window while it is sent.

    Windows keep UDP buffers from overflowing; sending on a thread matters for streams:
    the relay pushes back (stops reading) as soon as the receiving side is backed up, as
    a real peer would see, so a blocking send of a whole window must not wait for it.
    """
    import threading

    got: list[bytes] = []
    for i in range(0, len(frames), window):
        chunk = frames[i:i + window]
        sender = threading.Thread(target=send, args=(chunk,))
        sender.start()
        try:
            got += recv(len(chunk))
        finally:
            sender.join(30)
    return got


def tmp_sock_path(tmp_path: os.PathLike[str], name: str) -> str:
    return os.path.join(os.fspath(tmp_path), name)

"""The stdio port with a vanished or full stdout: no spinning, honest counters (issue 9)."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import wait_bound
from peers import LOOP4, StreamPeer, free_port, make_frame, random_frames, track
from reference import frame_stream

from fastrelay._core import Hub, StdioPort, StreamPort

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid, in clock ticks (1/100 s)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_closed_stdout_reader_does_not_make_the_hub_spin(relay_process) -> None:  # type: ignore[no-untyped-def]
    """D6: the write end of a pipe whose reader is gone reports EPOLLERR for ever; it must
    not be handled as "stdin readable" in a loop. The hub keeps serving its clients."""
    port = free_port()
    proc = relay_process("-l", f"{LOOP4}:{port}", "-", stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    wait_bound(port, socket.SOCK_STREAM)
    proc.proc.stdout.close()  # the reader of the relay's stdout goes away; stdin stays open
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    time.sleep(0.5)
    before = cpu_ticks(proc.proc.pid)
    time.sleep(2.0)
    ticks = cpu_ticks(proc.proc.pid) - before
    assert ticks < 20, f"{ticks} CPU ticks in 2 s while idle (spinning)"
    frames = random_frames(20, 60, 1500, seed=90)
    a.send(frames)
    assert b.recv(len(frames)) == frames
    b.send(frames)
    assert a.recv(len(frames)) == frames
    assert proc.proc.poll() is None


class FullStdout:
    """A StdioPort in a hub of its own whose stdout is a pipe already full, and a stream
    source feeding it. stdin is a pipe nobody writes to (open, idle)."""

    def __init__(self, queue_bytes: int) -> None:
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        os.set_blocking(self.in_r, False)
        os.set_blocking(self.out_w, False)
        fcntl.fcntl(self.out_w, F_SETPIPE_SZ, 4096)
        while True:  # fill stdout to the last byte
            try:
                os.write(self.out_w, b"x")
            except BlockingIOError:
                break
        self.src_peer, relay_side = socket.socketpair()
        track(self.src_peer)
        track(relay_side)
        self.hub = Hub()
        self.stdio = StdioPort(self.in_r, "stdio", wfd=self.out_w, queue_bytes=queue_bytes)
        self.src = StreamPort(relay_side.fileno(), "src", owns_fd=False)
        self.hub.add(self.stdio)
        self.hub.add(self.src)

    def feed(self, frames: list[bytes]) -> None:
        """Send frames from the source and poll until the hub has read them all."""
        want = self.src.rx_frames + len(frames)
        self.src_peer.sendall(frame_stream(frames))
        deadline = time.monotonic() + 5
        while self.src.rx_frames < want:
            assert time.monotonic() < deadline, "the hub did not read the frames"
            self.hub.poll()
            time.sleep(0.001)

    def read_stdout(self) -> bytes:
        """Everything written to stdout so far, polling the hub while it flushes."""
        os.set_blocking(self.out_r, False)
        out = bytearray()
        quiet = 0
        while quiet < 20:
            self.hub.poll()
            try:
                chunk = os.read(self.out_r, 1 << 16)
            except BlockingIOError:
                quiet += 1
                time.sleep(0.005)
                continue
            quiet = 0
            out += chunk
        return bytes(out)

    def close(self) -> None:
        self.hub.close()  # closes in_r and out_w (the port owns them)
        for fd in (self.in_w, self.out_r):
            os.close(fd)


@pytest.fixture
def full_stdout() -> Iterator:
    made: list[FullStdout] = []

    def make(queue_bytes: int) -> FullStdout:
        made.append(FullStdout(queue_bytes))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_frame_refused_by_a_full_backlog_is_dropped_not_sent(full_stdout) -> None:  # type: ignore[no-untyped-def]
    """D15c: stdout full and the backlog too small for the frame: counted in drop_queue,
    never in tx_frames (it was neither written nor queued)."""
    f = full_stdout(queue_bytes=100)
    f.feed([make_frame(1000, i) for i in range(5)])
    assert (f.stdio.tx_frames, f.stdio.drop_queue) == (0, 5), f.stdio.stats()


def test_queued_frames_count_as_sent_only_once_written(full_stdout) -> None:  # type: ignore[no-untyped-def]
    """D15c: frames waiting in the backlog are queued_frames, not tx_frames; they become
    tx_frames when written. Offered == tx + drop_queue + drop_send + queued at all times."""
    f = full_stdout(queue_bytes=4 * 1004)  # a queued frame is a record: 4-byte length + frame
    frames = [make_frame(1000, i) for i in range(5)]
    f.feed(frames)
    s = f.stdio
    assert s.queued_bytes == 4 * 1004, s.stats()  # four frames fit the bound, the fifth does not
    assert (s.tx_frames, s.drop_queue) == (0, 1), s.stats()
    assert s.queued_frames == 4
    out = f.read_stdout()
    assert out.endswith(b"".join(frames[:4])) and len(out) == 4096 + 4000
    assert (s.tx_frames, s.drop_queue, s.queued_frames) == (4, 1, 0), s.stats()

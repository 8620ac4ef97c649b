"""File capture (--pcap): every frame once, in order, per interface and direction; rotation,
snap length, stdout, FIFOs, SIGHUP, a full file; read back with tshark and tests/pcapng.py."""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pcapng
import pytest
from conftest import wait_until
from peers import LOOP4, StreamPeer, free_port, random_frames, tmp_sock_path

from fastrelay.capture import (BlockSplitter, CaptureSession, FileOutput,
                               interface_description, section_header)

IN, OUT = pcapng.INBOUND, pcapng.OUTBOUND


def seq(data: bytes) -> int:
    """The sequence number make_frame() put after the Ethernet header."""
    return int(struct.unpack(">Q", data[14:22])[0])


def client_name(peer: StreamPeer) -> str:
    """What the relay calls the port of an accepted TCP client (as `fastrelay stats` does)."""
    host, port = peer.sock.getsockname()[:2]
    return f"tcp client {host}:{port}"


def stream(cap: pcapng.Capture, name: str, direction: int) -> list[bytes]:
    return [p.data for p in cap.packets if p.name == name and p.direction == direction]


def tshark(path: str) -> list[tuple[str, int, int, int, int]]:
    """(interface name, direction, length, captured length, sequence) per packet, as
    tshark reads the file."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (scripts/test installs it)")
    result = subprocess.run(
        ["tshark", "-r", path, "-T", "fields", "-E", "separator=|",
         "-e", "frame.interface_name", "-e", "frame.packet_flags_direction",
         "-e", "frame.len", "-e", "frame.cap_len", "-e", "data.data"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines():
        name, direction, length, caplen, data = line.split("|")
        rows.append((name, int(direction, 16), int(length), int(caplen),
                     int(data[:16], 16) if len(data) >= 16 else -1))
    return rows


def ours(cap: pcapng.Capture) -> list[tuple[str, int, int, int, int]]:
    """The same rows from our own reader."""
    return [(p.name or "", p.direction or 0, p.length, len(p.data),
             seq(p.data) if len(p.data) >= 22 else -1) for p in cap.packets]


def hub(relay_process, *args: str, **kwargs: int):  # type: ignore[no-untyped-def]
    """A hub subprocess on a free port, with args; (process, port)."""
    port = free_port()
    proc = relay_process("-l", f"{LOOP4}:{port}", *args, **kwargs)
    return proc, port


def test_every_frame_once_in_order_with_interface_and_direction(relay_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "hub.pcapng")
    started = time.time_ns()
    proc, port = hub(relay_process, "--pcap", path)
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    to_b = random_frames(3000, 60, 1514, seed=1)
    to_a = random_frames(500, 60, 1514, seed=2)
    a.send(to_b)
    b.send(to_a)
    assert b.recv(len(to_b), timeout=20) == to_b
    assert a.recv(len(to_a), timeout=20) == to_a
    assert proc.stop() == 0
    ended = time.time_ns()

    cap = pcapng.read(path)
    na, nb = client_name(a), client_name(b)
    assert len(cap.sections) == 1
    assert sorted(i.name for i in cap.sections[0]) == sorted([na, nb])
    for interface in cap.sections[0]:
        assert (interface.linktype, interface.tsresol) == (1, 9)  # Ethernet, nanoseconds
        assert interface.description == f"tcp listener {LOOP4}:{port}"
    # Read from a: inbound on a, then outbound on b; and the other way round.
    assert stream(cap, na, IN) == to_b and stream(cap, nb, OUT) == to_b
    assert stream(cap, nb, IN) == to_a and stream(cap, na, OUT) == to_a
    assert len(cap.packets) == 2 * (len(to_b) + len(to_a))  # nothing else, nothing twice
    where = {(p.name, p.direction, seq(p.data)): i for i, p in enumerate(cap.packets)}
    assert all(where[(na, IN, s)] < where[(nb, OUT, s)] for s in range(len(to_b)))
    assert all(started <= p.timestamp <= ended for p in cap.packets)  # ns since the epoch
    assert tshark(path) == ours(cap)


def test_snap_length_and_stdout(relay_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc, port = hub(relay_process, "--pcap", "-", "--pcap-snaplen", "64",
                     stdout=subprocess.PIPE)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(
        lambda: proc.proc.stdout.read1(1 << 16), b"")), daemon=True)
    reader.start()
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    frames = random_frames(400, 60, 1514, seed=3)
    a.send(frames)
    assert b.recv(len(frames)) == frames
    proc.proc.send_signal(signal.SIGTERM)
    reader.join(10)
    assert proc.wait() == 0
    data = b"".join(chunks)
    cap = pcapng.parse(data)
    assert all(i.snaplen == 64 for i in cap.sections[0])
    inbound = [p for p in cap.packets if p.name == client_name(a) and p.direction == IN]
    assert [p.data for p in inbound] == [f[:64] for f in frames]
    assert [p.length for p in inbound] == [len(f) for f in frames]
    path = str(tmp_path / "stdout.pcapng")
    with open(path, "wb") as f:
        f.write(data)
    rows = tshark(path)
    assert rows == ours(cap) and sorted(row[3] for row in rows) == sorted(
        [min(len(f), 64) for f in frames] * 2)


@pytest.mark.parametrize("count", [None, 3])
def test_rotation_by_size_and_count(relay_process, tmp_path, count: int | None) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "rot.pcapng")
    size = 64 * 1024
    args = ["--pcap", path, "--pcap-size", "64k"] + (["--pcap-count", str(count)] if count
                                                      else [])
    proc, port = hub(relay_process, *args)
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    frames = random_frames(600, 900, 1100, seed=4)
    a.send(frames[:300])
    assert b.recv(300) == frames[:300]
    c = StreamPeer.connect((LOOP4, port))  # joins mid-file: later files must describe it
    marker = random_frames(1, 60, 60, seed=40)
    c.send(marker)  # once a and b have it, c is attached
    assert a.recv(1) == marker and b.recv(1) == marker
    a.send(frames[300:])
    assert b.recv(300) == frames[300:]
    assert c.recv(300) == frames[300:]
    assert proc.stop() == 0

    numbers = sorted(int(n.rsplit(".", 1)[1]) for n in os.listdir(tmp_path)
                     if n.startswith("rot.pcapng."))
    files = [f"{path}.{n}" for n in numbers] + [path]
    if count is None:
        assert numbers == list(range(1, len(numbers) + 1)) and len(files) >= 20
    else:
        assert len(files) == count and numbers[-1] >= 20  # the oldest were removed
    total = pcapng.Capture()
    for i, name in enumerate(files):
        assert os.path.getsize(name) <= size, name
        cap = pcapng.read(name)
        assert cap.sections and cap.packets, name
        if i in (0, len(files) // 2, len(files) - 1):  # tshark is slow to start
            assert tshark(name) == ours(cap), name
        total.packets += cap.packets
    na, nb, nc = client_name(a), client_name(b), client_name(c)
    expected = {(na, IN): frames, (nb, OUT): frames[:300] + marker + frames[300:],
                (nc, OUT): frames[300:], (nc, IN): marker, (na, OUT): marker}
    for (name, direction), sent in expected.items():
        got = stream(total, name, direction)
        if count is None:
            assert got == sent, (name, direction)
        else:
            # The newest files hold the end of the capture: of each stream, its last
            # copies, if any (a batch's inbound copies all precede its outbound ones).
            assert got == sent[len(sent) - len(got):], (name, direction)
    assert stream(total, nc, OUT)[-1] == frames[-1]
    assert len(total.packets) == sum(len(stream(total, *k)) for k in expected)


def test_sighup_reopens_the_file_and_connections_stay(relay_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "hup.pcapng")
    proc, port = hub(relay_process, "--pcap", path)
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    frames = random_frames(400, 60, 1514, seed=5)
    a.send(frames[:200])
    assert b.recv(200) == frames[:200]
    os.rename(path, path + ".old")  # as logrotate does
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: os.path.exists(path), 5, "the file reopened")
    a.send(frames[200:])
    assert b.recv(200) == frames[200:]
    assert proc.stop() == 0
    old, new = pcapng.read(path + ".old"), pcapng.read(path)
    na = client_name(a)
    assert stream(old, na, IN) == frames[:200]
    assert stream(new, na, IN) == frames[200:]
    assert sorted(i.name for i in new.sections[0]) == sorted([na, client_name(b)])
    assert "closed" not in proc.stderr


def fifo_reader(path: str, chunks: list[bytes], stop: threading.Event) -> threading.Thread:
    """Open the FIFO for reading (blocking until the relay opens it too) and collect
    everything until EOF or stop."""
    def run() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while not stop.is_set():
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    data = None
                if data:
                    chunks.append(data)
                elif data == b"" and chunks:
                    return  # EOF after the writer came and went
                else:
                    time.sleep(0.005)  # no writer yet (EOF), or nothing to read
        finally:
            os.close(fd)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_fifo_streams_and_a_new_reader_gets_a_new_section(relay_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "cap.fifo")
    os.mkfifo(path)
    proc, port = hub(relay_process, "-vv", "--pcap", path)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(line.decode() for line in proc.proc.stderr),
                     daemon=True).start()
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    frames = random_frames(300, 60, 1514, seed=6)
    a.send(frames[:50])  # nobody reads the FIFO yet: these are not captured
    assert b.recv(50) == frames[:50]
    first: list[bytes] = []
    stop = threading.Event()
    reader = fifo_reader(path, first, stop)
    wait_until(lambda: b"".join(first), 5, "the section header")
    a.send(frames[50:150])
    assert b.recv(100) == frames[50:150]
    wait_until(lambda: len(pcapng.parse(b"".join(first), allow_tail=True).packets) >= 200,
               5, "100 frames in and out")
    stop.set()
    reader.join(5)  # the reader leaves: the relay notices and waits for the next one
    wait_until(lambda: any("the reader left" in line for line in log), 5, "the relay noticed")
    a.send(frames[150:200])
    assert b.recv(50) == frames[150:200]
    second: list[bytes] = []
    reader = fifo_reader(path, second, threading.Event())
    wait_until(lambda: b"".join(second), 5, "a new section header")
    a.send(frames[200:])
    assert b.recv(100) == frames[200:]
    assert proc.stop() == 0  # writes out what it holds before it exits
    reader.join(5)
    one, two = pcapng.parse(b"".join(first)), pcapng.parse(b"".join(second))
    na = client_name(a)
    assert stream(one, na, IN) == frames[50:150]
    assert stream(two, na, IN) == frames[200:]
    assert len(two.sections) == 1 and len(two.sections[0]) == 2


def test_a_full_file_is_cut_to_whole_blocks_and_forwarding_goes_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "full.pcapng")
    limit = 100_003  # not a block boundary: the write that crosses it is cut short

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastrelay", "-l", f"{LOOP4}:{port}",
                             "--pcap", path], preexec_fn=small_files,
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        a = StreamPeer.connect((LOOP4, port))
        b = StreamPeer.connect((LOOP4, port))
        frames = random_frames(400, 500, 1514, seed=7)
        for i in range(0, len(frames), 20):  # small steps: the file fills between writes
            a.send(frames[i:i + 20])
            assert b.recv(20) == frames[i:i + 20]
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "capture file" in err.decode() and "File too large" in err.decode()
    cap = pcapng.read(path)  # valid: whole blocks only
    assert 0 < os.path.getsize(path) <= limit
    got = stream(cap, client_name(a), IN)
    assert got == frames[:len(got)] and len(got) > 10


def test_block_splitter_passes_whole_blocks_whatever_the_cuts() -> None:
    blocks = [section_header(), interface_description("p", "d", 64)]
    blocks += [struct.pack("=II", 6, 12 + 4 * n) + bytes(4 * n) + struct.pack("=I", 12 + 4 * n)
               for n in range(40)]
    data = b"".join(blocks)
    ends = {sum(map(len, blocks[:i])) for i in range(len(blocks) + 1)}
    rng = random.Random(8)
    for _ in range(50):
        splitter, out, pos = BlockSplitter(), b"", 0
        while pos < len(data):
            step = rng.randint(1, 300)
            out += splitter.feed_data(data[pos:pos + step])
            pos += step
            assert len(out) in ends and data.startswith(out)
        assert out == data and not splitter.pending
    with pytest.raises(ValueError):
        BlockSplitter().feed_data(b"\x06\x00\x00\x00\x05\x00\x00\x00" + bytes(8))


def end(relay, session: CaptureSession) -> None:  # type: ignore[no-untyped-def]
    """Write out what the in-process relay's session holds, then close it."""
    asyncio.run_coroutine_threadsafe(session.finish(), relay.loop).result(10)
    relay.call(session.close)


def test_client_churn_keeps_interfaces_bounded(inprocess_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "churn.pcapng")
    port = free_port()
    relay = inprocess_relay(listen=f"{LOOP4}:{port}")
    box: list[CaptureSession] = []

    def add() -> None:
        session = CaptureSession(FileOutput(path), link="churn")
        session.start(strict=True)
        relay.relay.add_capture(session)
        box.append(session)
    relay.call(add)
    b = StreamPeer.connect((LOOP4, port))
    names = []
    for i in range(150):  # each client has a name of its own (its port)
        c = StreamPeer.connect((LOOP4, port))
        names.append(client_name(c))
        c.send(random_frames(1, 60, 60, seed=i))
        assert seq(b.recv(1)[0]) == 0
        c.close()
    end(relay, box[0])
    cap = pcapng.read(path)
    assert len(cap.sections) >= 2  # closed clients' interfaces were dropped
    assert max(len(s) for s in cap.sections) <= 64 + 2 + 2
    inbound = [p.name for p in cap.packets if p.direction == IN]
    assert inbound == names  # each client's frame under its own name
    assert len(tshark(path)) == len(cap.packets)


def test_unix_clients_of_one_name_share_an_interface(inprocess_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "unix.pcapng")
    sock = tmp_sock_path(tmp_path, "hub.sock")
    relay = inprocess_relay(listen=f"unix:{sock}")
    box: list[CaptureSession] = []

    def add() -> None:
        session = CaptureSession(FileOutput(path), link="u")
        session.start(strict=True)
        relay.relay.add_capture(session)
        box.append(session)
    relay.call(add)
    b = StreamPeer.connect(sock, family=socket.AF_UNIX)
    for i in range(20):  # unnamed unix clients: one name, one interface, reused
        c = StreamPeer.connect(sock, family=socket.AF_UNIX)
        c.send(random_frames(1, 60, 60, seed=i))
        b.recv(1)
        c.close()
        wait_until(lambda: relay.call(lambda: len(relay.relay.hub.ports)) == 1, 5,
                   "the client gone")
    end(relay, box[0])
    cap = pcapng.read(path)
    assert len(cap.sections) == 1 and len(cap.sections[0]) == 2
    assert [p.name for p in cap.packets if p.direction == IN] == ["unix client (unnamed)"] * 20


@pytest.mark.parametrize("args, status, text", [
    (["--pcap", "/nonexistent-dir/x.pcapng", "-l", "127.0.0.1:1"], 1,
     "capture file /nonexistent-dir/x.pcapng: cannot open: No such file or directory"),
    (["--pcap-size", "1M", "-l", "127.0.0.1:1"], 2, "--pcap-size: goes with --pcap FILE"),
    (["--pcap", "x", "--pcap-count", "3", "-l", "127.0.0.1:1"], 2,
     "--pcap-count: goes with --pcap-size"),
    (["--pcap", "x", "--pcap-size", "10", "-l", "127.0.0.1:1"], 2, "too small"),
    (["--pcap", "x", "--pcap-snaplen", "0", "-l", "127.0.0.1:1"], 2, "out of range"),
    (["--pcap", "-", "-", "127.0.0.1:1"], 2, "stdout is taken by the stdio target"),
    (["-w", "x", "-l", "127.0.0.1:1"], 2, "-w FILE goes with `fastrelay capture`"),
    (["capture"], 2, "capture: which link?"),
    (["capture", "lab", "--control", "/nonexistent-dir/ctl.sock"], 1,
     "cannot reach the daemon at /nonexistent-dir/ctl.sock"),
])
def test_bad_input_is_one_line(args: list[str], status: int, text: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fastrelay", *args], capture_output=True,
                            text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrelay: ") and text in lines[0], \
        result.stderr


def test_binary_to_a_terminal_is_refused() -> None:
    import pty

    master, slave = pty.openpty()
    try:
        for args in (["capture", "lab"], ["--pcap", "-", "-l", "127.0.0.1:1"]):
            result = subprocess.run([sys.executable, "-m", "fastrelay", *args], stdout=slave,
                                    stderr=subprocess.PIPE, text=True, timeout=20,
                                    stdin=subprocess.DEVNULL)
            assert result.returncode == 2 and "stdout is a terminal" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    finally:
        os.close(master)
        os.close(slave)

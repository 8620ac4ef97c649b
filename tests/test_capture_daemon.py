"""Captures of a running daemon: `fastrelay capture`, pcap per link, slow readers, reloads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pcapng
from conftest import wait_until
from peers import LOOP4, StreamListener, StreamPeer, free_port, random_frames, track
from reference import frame_stream
from test_capture import IN, OUT, client_name, seq, stream, tshark
from test_metrics import parse_prometheus, value

from fastrelay import defaults
from fastrelay.control import query


def link(ctl: str, name: str) -> dict:  # type: ignore[type-arg]
    doc = json.loads(query(ctl))
    return next(entry for entry in doc["links"] if entry["name"] == name)  # type: ignore[no-any-return]


def connected(ctl: str, name: str) -> int:
    return sum(e["connected"] for e in link(ctl, name)["endpoints"])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The daemon's descriptors once a stats query it just answered has closed (it reads
    the client's end of the connection before closing it)."""
    time.sleep(0.2)
    return open_fds(pid)


def hub_config(ctl: str, **hubs: str) -> str:
    """A config with a control socket and one hub per keyword: name = extra lines."""
    text = f'[daemon]\ncontrol = "{ctl}"\n'
    for name, extra in hubs.items():
        text += f"[hub.{name}]\nlisten = \"{LOOP4}:{free_port()}\"\n{extra}\n"
    return text


def listen_port(ctl: str, name: str) -> int:
    label = link(ctl, name)["endpoints"][0]["endpoint"]
    return int(label.rsplit(":", 1)[1])


def pair(ctl: str, name: str) -> tuple[StreamPeer, StreamPeer]:
    """Two clients of hub name, both attached."""
    port = listen_port(ctl, name)
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    wait_until(lambda: connected(ctl, name) == 2, 5, "two clients attached")
    return a, b


class RawReceiver:
    """Reads a peer's socket on a thread until `expect` bytes came (fast: no parsing)."""

    def __init__(self, peer: StreamPeer, expect: int) -> None:
        self.peer = peer
        self.expect = expect
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.peer.sock.settimeout(60)
        while len(self.data) < self.expect:
            chunk = self.peer.sock.recv(1 << 20)
            if not chunk:
                return
            self.data += chunk

    def wait(self, timeout: float = 60) -> bytes:
        self.thread.join(timeout)
        return bytes(self.data)


class LiveClient:
    """A client of the control socket's `capture` command; reads on a thread if asked."""

    def __init__(self, ctl: str, command: str, read: bool = True) -> None:
        self.sock = track(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        self.sock.connect(ctl)
        self.sock.sendall(command.encode() + b"\n")
        self.data = bytearray()
        self.thread = None
        if read:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def packets(self) -> pcapng.Capture:
        return pcapng.parse(bytes(self.data), allow_tail=True)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        if self.thread is not None:
            self.thread.join(5)
        self.sock.close()


def test_fastrelay_capture_twice_while_a_counted_stream_flows(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(hub_config(ctl, lab=""))
    a, b = pair(ctl, "lab")
    frames = random_frames(40000, 60, 300, seed=11)
    receiver = RawReceiver(b, len(frame_stream(frames)))
    sender = threading.Thread(target=lambda: [
        (a.send(frames[i:i + 100]), time.sleep(0.004)) for i in range(0, len(frames), 100)],
        daemon=True)
    sender.start()
    baseline = settled_fds(proc.proc.pid)
    na, nb = client_name(a), client_name(b)
    out = str(tmp_path / "one.pcapng")
    # First all ports to a pipe, then one port to a file (-w), ended as Ctrl-C would.
    for ports, names, args in (([], {na, nb}, []), ([na], {na}, ["-w", out])):
        client = subprocess.Popen([sys.executable, "-m", "fastrelay", "capture", "--control",
                                   ctl, "lab", *ports, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(
            lambda: client.stdout.read1(1 << 16), b"")), daemon=True)
        reader.start()

        def captured() -> bytes:
            if not args:
                return b"".join(chunks)
            with open(out, "rb") as f:
                return f.read()
        wait_until(lambda: os.path.exists(out) or not args, 10, "the file")
        wait_until(lambda: len(pcapng.parse(captured(), allow_tail=True).packets) >= 300,
                   10, "frames captured")
        assert sender.is_alive(), "the stream must flow during the capture"
        client.send_signal(signal.SIGTERM)
        assert client.wait(10) == 0, client.stderr.read()
        reader.join(5)
        client.stdout.close()
        client.stderr.close()
        # A file holds whole blocks only (a pipe's reader may see a cut last block).
        cap = pcapng.parse(captured(), allow_tail=not args)
        assert {i.name for i in cap.sections[0]} == names
        assert {p.name for p in cap.packets} <= names
        seqs = [seq(p.data) for p in cap.packets if p.name == na and p.direction == IN]
        if link(ctl, "lab")["capture_dropped"] == 0:
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none missing
        if nb in names:
            assert [seq(d) for d in stream(cap, nb, OUT)] == seqs[:len(stream(cap, nb, OUT))]
        # The client has gone: its capture is removed, and nothing of it is left open.
        wait_until(lambda: link(ctl, "lab")["captures"] == [], 5, "the capture removed")
        wait_until(lambda: open_fds(proc.proc.pid) <= baseline, 5, "descriptors released")
    sender.join(60)
    assert receiver.wait() == frame_stream(frames)  # not one frame lost
    entry = link(ctl, "lab")
    assert entry["capture_frames"] >= 600
    assert all(e["disconnects"] == 0 and e["connections"] == 2 for e in entry["endpoints"])
    assert "capture client 1: capturing every port" in proc.log
    assert f"capture client 2: capturing {na}" in proc.log


def test_fifo_nobody_reads_leaves_forwarding_at_full_speed(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    fifo = str(tmp_path / "cap.fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        daemon_process(hub_config(ctl, cap=f'pcap = "{fifo}"', plain=""))
        wait_until(lambda: link(ctl, "cap")["captures"][0]["state"] == "writing", 5,
                   "the FIFO opened")
        peers = {name: pair(ctl, name) for name in ("cap", "plain")}
        # 400k small frames (a block of 1000 repeated): per-frame work is what a capture
        # would add to, and the transfer lasts long enough to be timed.
        block = frame_stream(random_frames(1000, 60, 120, seed=12))
        data, count = block * 400, 1000 * 400

        def transfer(name: str) -> float:
            a, b = peers[name]
            receiver = RawReceiver(b, len(data))
            began = time.monotonic()
            a.send_raw(data)
            got = receiver.wait()
            took = time.monotonic() - began
            assert got == data, f"{name}: {len(got)} of {len(data)} bytes"  # no loss
            return took

        # Alternated, best of two each: the machine is shared.
        times: dict[str, list[float]] = {"cap": [], "plain": []}
        for _ in range(2):
            for name in times:
                times[name].append(transfer(name))
        best = {name: min(t) for name, t in times.items()}
        assert best["cap"] <= 1.5 * best["plain"] + 0.1, best
        entry = link(ctl, "cap")
        # Every frame was offered to the capture twice (read from a, sent to b): each copy
        # is in the buffer or the pipe, or dropped and counted.
        assert entry["capture_dropped"] > 0
        assert entry["capture_frames"] + entry["capture_dropped"] == 2 * 2 * count
        assert link(ctl, "plain")["capture_frames"] == 0
        samples, _ = parse_prometheus(query(ctl, "metrics"))
        assert value(samples, "fastrelay_capture_dropped_frames_total", link="cap") == \
            entry["capture_dropped"]
        assert value(samples, "fastrelay_captures", link="cap") == 1
    finally:
        os.close(reader)


def test_two_live_captures_one_stalled_one_reading(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(hub_config(ctl, lab=""))
    a, b = pair(ctl, "lab")
    baseline = settled_fds(proc.proc.pid)
    reading = LiveClient(ctl, "capture lab")
    stalled = LiveClient(ctl, "capture lab", read=False)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_until(lambda: len(link(ctl, "lab")["captures"]) == 2, 5, "two captures")
    frames = random_frames(30000, 200, 400, seed=13)
    receiver = RawReceiver(b, len(frame_stream(frames)))
    for i in range(0, len(frames), 500):  # paced, so the reading client keeps up
        a.send(frames[i:i + 500])
        time.sleep(0.01)
    assert receiver.wait() == frame_stream(frames)
    sessions = {s["output"]: s for s in link(ctl, "lab")["captures"]}
    assert len(sessions) == 2
    stuck = sessions["capture client 2"]
    assert stuck["dropped"] > 0 and stuck["state"] == "writing"
    # The stalled one did not hold the other back: it has the stream to its last frame.
    wait_until(lambda: any(seq(p.data) == len(frames) - 1 for p in reading.packets().packets),
               5, "the last frame in the reading capture")
    stalled.close()
    wait_until(lambda: len(link(ctl, "lab")["captures"]) == 1, 5, "the stalled one removed")
    reading.close()
    wait_until(lambda: link(ctl, "lab")["captures"] == [], 5, "both removed")
    wait_until(lambda: open_fds(proc.proc.pid) <= baseline, 5, "descriptors released")
    assert "capture client 2: ended" in proc.log


def test_reload_reopens_moves_and_stops_pcap(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    first, second = str(tmp_path / "one.pcapng"), str(tmp_path / "two.pcapng")
    port = free_port()

    def config(extra: str) -> str:
        return (f'[daemon]\ncontrol = "{ctl}"\n[hub.lab]\nlisten = "{LOOP4}:{port}"\n'
                f"{extra}\n")

    proc = daemon_process(config(f'pcap = "{first}"'))
    a, b = pair(ctl, "lab")
    frames = random_frames(400, 60, 1514, seed=14)

    def step(part: list[bytes], write: str | None = None) -> None:
        if write is not None:
            with open(proc.config, "w") as f:
                f.write(config(write))
            proc.signal(signal.SIGHUP)
            proc.expect_notify("READY=1")
        a.send(part)
        assert b.recv(len(part)) == part

    step(frames[:100])
    os.rename(first, first + ".old")  # logrotate
    step(frames[100:200], f'pcap = "{first}"')  # unchanged: reopened
    step(frames[200:300], f'pcap = "{second}"\npcap_snaplen = 100')  # changed: moved
    step(frames[300:], "")  # removed: capture stops
    assert link(ctl, "lab")["captures"] == []
    entry = link(ctl, "lab")
    assert all(e["disconnects"] == 0 and e["connections"] == 2 for e in entry["endpoints"])
    proc.stop()
    na = client_name(a)
    assert stream(pcapng.read(first + ".old"), na, IN) == frames[:100]
    assert stream(pcapng.read(first), na, IN) == frames[100:200]
    moved = pcapng.read(second)
    assert stream(moved, na, IN) == [f[:100] for f in frames[200:300]]
    assert len(tshark(second)) == 200


def test_bad_requests_one_line_and_bounded_clients(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    daemon_process(hub_config(ctl, lab=""))
    a, _ = pair(ctl, "lab")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fastrelay", "capture", "--control", ctl,
                               *args], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)

    for args, text in ((["nolab"], "capture: no link or hub named 'nolab' (there are: 'lab')"),
                       (["lab", "tcp client 127.0.0.1:1"],
                        "capture: hub lab has no port or endpoint 'tcp client 127.0.0.1:1'"),
                       (["lab", "-w", str(tmp_path / "no" / "x.pcapng")],
                        "capture: cannot write")):
        result = run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("fastrelay: " + text), lines[0]
    assert not os.path.exists(tmp_path / "no")
    # A port by its name or its endpoint's label.
    by_name = LiveClient(ctl, f"capture lab '{client_name(a)}'")
    by_label = LiveClient(ctl, f"capture lab 'listen:{LOOP4}:{listen_port(ctl, 'lab')}'")
    wait_until(lambda: len(link(ctl, "lab")["captures"]) == 2, 5, "two captures")
    for client in (by_name, by_label):
        client.close()
    clients = [LiveClient(ctl, "capture lab") for _ in range(defaults.CAPTURE_CLIENTS_MAX)]
    wait_until(lambda: len(link(ctl, "lab")["captures"]) == defaults.CAPTURE_CLIENTS_MAX, 5,
               "every capture")
    result = run("lab")
    assert result.returncode == 1 and "live captures already" in result.stderr
    for client in clients:
        client.close()
    wait_until(lambda: link(ctl, "lab")["captures"] == [], 5, "all removed")


def test_config_capture_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    path.write_text(f"""[defaults]
pcap_snaplen = 0
[hub.a]
listen = "{LOOP4}:{free_port()}"
pcap = "{tmp_path}/a.pcapng"
pcap_count = 3
[hub.b]
listen = "{LOOP4}:{free_port()}"
pcap = "{tmp_path}/a.pcapng"
pcap_size = "10k"
[hub.c]
listen = "{LOOP4}:{free_port()}"
pcap = "-"
pcap_snap = 5
""")
    result = subprocess.run([sys.executable, "-m", "fastrelay", "--check", str(path)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"{path}:2: defaults.pcap_snaplen: 0 is out of range (1..262144)",
        f"{path}:6: hub.a.pcap_count: needs pcap_size (files rotate by size)",
        f"{path}:9: hub.b.pcap: '{tmp_path}/a.pcapng' is the capture file of 'a' already",
        f"{path}:10: hub.b.pcap_size: 10240 is too small (at least 64k)",
        f"{path}:13: hub.c.pcap: '-' (stdout) is for the command line only",
        f"{path}:14: hub.c.pcap_snap: unknown key (did you mean 'pcap_snaplen'?)",
    ]


def test_a_pcap_goes_on_across_the_links_restarts(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    path = str(tmp_path / "p2p.pcapng")
    la, lb = StreamListener(), StreamListener()
    proc = daemon_process(f"""[daemon]
control = "{ctl}"
[link.p2p]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{lb.port}"]
reconnect = false
pcap = "{path}"
""")
    frames = random_frames(200, 60, 1514, seed=15)
    a, b = la.accept(), lb.accept()
    a.send(frames[:100])
    assert b.recv(100) == frames[:100]
    a.close()  # one side ends: the link ends, and is started again
    b.expect_closed()
    a, b = la.accept(timeout=10), lb.accept(timeout=10)
    a.send(frames[100:])
    assert b.recv(100) == frames[100:]
    proc.stop()
    assert "ended; starting it again" in proc.log
    cap = pcapng.read(path)
    name = f"tcp {LOOP4}:{la.port}"
    assert len(cap.sections) == 1 and len(cap.sections[0]) == 2  # the same names again
    assert stream(cap, name, IN) == frames
    assert stream(cap, f"tcp {LOOP4}:{lb.port}", OUT) == frames

"""The daemon as systemd runs it: several links in one process, reconnects, SIGHUP, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import wait_until
from peers import LOOP4, StreamListener, StreamPeer, free_port, make_frame, random_frames, track
from test_metrics import parse_prometheus, value

from fastrelay.control import query

RECONNECT_MAX = 0.5  # the back-off cap the tests configure; reconnects must beat it


def stats(ctl: str) -> dict:  # type: ignore[type-arg]
    return json.loads(query(ctl))  # type: ignore[no-any-return]


def endpoint(doc: dict, link: str, label: str) -> dict:  # type: ignore[type-arg]
    for entry in doc["links"]:
        if entry["name"] == link:
            for ep in entry["endpoints"]:
                if ep["endpoint"] == label:
                    return ep  # type: ignore[no-any-return]
    raise AssertionError(f"no endpoint {label} in link {link}: {doc}")


def link_state(ctl: str, name: str) -> str:
    return next(entry["state"] for entry in stats(ctl)["links"] if entry["name"] == name)


def listen_on(port: int) -> socket.socket:
    """A qemu `socket,listen=` peer on a fixed port (one that was down until now)."""
    sock = track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOP4, port))
    sock.listen(1)
    return sock


def test_one_link_down_the_other_flows_and_the_down_one_reconnects(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    la, lb, lc = StreamListener(), StreamListener(), StreamListener()
    down = free_port()
    busy = track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    busy.bind((LOOP4, 0))
    busy_port = busy.getsockname()[1]
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(f"""
[daemon]
control = "{ctl}"
[defaults]
reconnect_max = {RECONNECT_MAX}
[link.up]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{lb.port}"]
[link.down]
endpoints = ["{LOOP4}:{down}", "{LOOP4}:{lc.port}"]
[link.blocked]   # its UDP port is taken: it cannot start until the port is free
endpoints = ["{busy_port}:{LOOP4}:{free_port(kind=socket.SOCK_DGRAM)}",
             "{LOOP4}:{free_port()}"]
""")
    a, b, c = la.accept(), lb.accept(), lc.accept()
    frames = random_frames(2000, 60, 9000, seed=21)
    a.send(frames)
    assert b.recv(len(frames)) == frames
    b.send(frames[:100])
    assert a.recv(100) == frames[:100]
    wait_until(lambda: link_state(ctl, "blocked") == "restarting", 5, "blocked link retrying")

    time.sleep(1.0)  # the down link's back-off reaches its cap meanwhile
    ld = listen_on(down)
    returned = time.monotonic()
    ld.settimeout(5)
    conn, _ = ld.accept()
    delay = time.monotonic() - returned
    assert delay <= RECONNECT_MAX + 0.35, f"reconnected {delay:.3f}s after the peer returned"
    d = StreamPeer(conn)
    d.send(frames[:500])
    assert c.recv(500) == frames[:500]
    c.send(frames[500:600])
    assert d.recv(100) == frames[500:600]

    doc = stats(ctl)
    assert endpoint(doc, "down", f"{LOOP4}:{down}")["reconnects"] == 1
    assert endpoint(doc, "down", f"{LOOP4}:{down}")["connected"] == 1
    up = endpoint(doc, "up", f"{LOOP4}:{la.port}")
    assert up["connections"] == 1 and up["rx_frames"] == 2000 and up["disconnects"] == 0

    busy.close()  # the blocked link starts on its next attempt
    wait_until(lambda: link_state(ctl, "blocked") == "up", 8, "blocked link up")
    assert "cannot bind UDP port" in proc.log
    assert proc.wait_log(": reconnected").startswith(f"fastrelay: link down: tcp {LOOP4}:{down}")


def counted_sender(peer: StreamPeer, frames: list[bytes], chunk: int,
                   pause: float) -> threading.Thread:
    """Send frames chunk by chunk with a pause between, on a thread (a paced guest)."""
    def run() -> None:
        try:
            for i in range(0, len(frames), chunk):
                peer.send(frames[i:i + chunk])
                time.sleep(pause)
        except OSError:
            pass  # the relay went away: the receiver's count tells
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sighup_keeps_unchanged_link_and_applies_changes(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    la, lb = StreamListener(), StreamListener()
    p_old, p_new = free_port(), free_port()
    ctl = str(tmp_path / "ctl.sock")
    keep = f"""[link.keep]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{lb.port}"]
"""
    proc = daemon_process(f"""[daemon]
control = "{ctl}"
{keep}
[hub.old]
listen = "{LOOP4}:{p_old}"
""")
    a, b = la.accept(), lb.accept()
    old_client = StreamPeer.connect((LOOP4, p_old))
    frames = [make_frame(200, i) for i in range(30000)]
    sender = counted_sender(a, frames, 500, 0.005)
    got: list[bytes] = []
    receiver = threading.Thread(target=lambda: got.extend(b.recv(len(frames), timeout=60)))
    receiver.start()
    time.sleep(0.2)

    # Mid-stream: the same link (moved, with a comment), one hub gone, one new.
    with open(proc.config, "w") as f:
        f.write(f"""[daemon]
control = "{ctl}"

[hub.new]
listen = "{LOOP4}:{p_new}"

# unchanged, only moved
{keep}""")
    proc.signal(signal.SIGHUP)
    seen = proc.expect_notify("READY=1")
    assert any(m.startswith("RELOADING=1") for m in seen)
    assert "MONOTONIC_USEC=" in next(m for m in seen if m.startswith("RELOADING=1"))
    sender.join(60)
    receiver.join(60)
    assert len(got) == len(frames) and got == frames  # not one frame lost or reordered

    for listener in (la, lb):  # the relay never connected again: same sockets
        listener.sock.settimeout(0.2)
        try:
            listener.sock.accept()
            raise AssertionError("the unchanged link reconnected")
        except TimeoutError:
            pass
    doc = stats(ctl)
    assert [entry["name"] for entry in doc["links"]] == ["keep", "new"]
    assert endpoint(doc, "keep", f"{LOOP4}:{la.port}")["connections"] == 1
    old_client.expect_closed()
    with socket.socket() as probe:
        assert probe.connect_ex((LOOP4, p_old)) != 0  # the removed hub's port is closed
    new_client = StreamPeer.connect((LOOP4, p_new))
    new_client2 = StreamPeer.connect((LOOP4, p_new))
    new_client.send(frames[:10])
    assert new_client2.recv(10) == frames[:10]
    new_client.close()  # a guest restarts: the hub takes it back
    new_client = StreamPeer.connect((LOOP4, p_new))
    new_client2.send(frames[:10])
    assert new_client.recv(10) == frames[:10]

    # A broken file is refused; everything keeps running.
    with open(proc.config, "w") as f:
        f.write("[link.keep\n")
    proc.signal(signal.SIGHUP)
    proc.expect_notify("READY=1")
    assert "reload refused" in proc.wait_log("still running the previous configuration")
    a.send(frames[:50])
    assert b.recv(50) == frames[:50]
    assert proc.proc.poll() is None


def read_to_end(peer: StreamPeer, timeout: float = 20.0) -> list[bytes]:
    """Every frame until the other side closes."""
    frames = list(peer.pending)
    peer.sock.settimeout(timeout)
    while True:
        data = peer.sock.recv(1 << 20)
        if not data:
            return frames
        frames += peer.rx.feed_data(data)


def test_sigterm_flushes_queues_closes_and_exits_zero(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    la, lb = StreamListener(), StreamListener()
    hub_port = free_port()
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(f"""[daemon]
control = "{ctl}"
stop_timeout = 5.0
[link.l]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{lb.port}"]
queue = "2M"
[hub.h]
listen = "{LOOP4}:{hub_port}"
""")
    a, b = la.accept(), lb.accept()
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    frames = [make_frame(1400, i) for i in range(12000)]  # ~17 MB: more than the buffers
    counted_sender(a, frames, 1000, 0)
    label = f"{LOOP4}:{lb.port}"
    # b reads nothing: frames queue for it, then the sender is paused (with a batch or
    # so queued: the relay pauses a source as soon as its only peer is backed up).
    wait_until(lambda: endpoint(stats(ctl), "l", label)["queued_bytes"] > 0, 10,
               "frames queued for the stalled peer")
    time.sleep(0.2)
    before = endpoint(stats(ctl), "l", label)
    assert before["queued_bytes"] > 0

    proc.signal(signal.SIGTERM)
    proc.expect_notify("STOPPING=1")
    began = time.monotonic()
    got = read_to_end(b)  # now b reads, until the relay closes: the queue was flushed
    assert len(got) >= before["tx_frames"] and got == frames[:len(got)]
    assert proc.wait(10) == 0
    assert time.monotonic() - began < 4.0  # drained well before stop_timeout
    assert not os.path.exists(ctl)
    with socket.socket() as probe:
        assert probe.connect_ex((LOOP4, hub_port)) != 0
    assert "SIGTERM: stopping" in proc.log and proc.lines[-1].endswith("stopped")


def test_sigint_stops_too_and_a_stuck_queue_is_bounded(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    la, lb = StreamListener(), StreamListener()
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(f"""[daemon]
control = "{ctl}"
stop_timeout = 0.5
[link.l]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{lb.port}"]
""")
    a, b = la.accept(), lb.accept()
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    counted_sender(a, [make_frame(1400, i) for i in range(8000)], 1000, 0)
    label = f"{LOOP4}:{lb.port}"
    wait_until(lambda: endpoint(stats(ctl), "l", label)["queued_bytes"] > 0, 10, "a queue")
    began = time.monotonic()
    proc.signal(signal.SIGINT)
    assert proc.wait(10) == 0  # b never reads: the drain gives up after stop_timeout
    assert time.monotonic() - began < 3.0
    assert "queued bytes unsent" in proc.log


# -- acceptance: 100k counted frames, the TCP peer of one link killed and restarted twice --

# A qemu `socket,listen=` guest on a fixed port, as a process that can be killed. It prints
# when it listens and accepts (monotonic clock, shared by every process of the host) and,
# per read, the first and last sequence number and count of the whole frames it got. A slow
# one reads 64 KiB per millisecond through a small buffer: like a busy guest, it always has
# frames in flight (in its buffer and the relay's) when it is killed.
KILLABLE_PEER = r"""
import socket, sys, time
slow = sys.argv[2] == "slow"
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if slow:
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(1)
print("listening", time.monotonic(), flush=True)
conn, _ = ls.accept()
print("accepted", time.monotonic(), flush=True)
buf = bytearray()
while True:
    if slow:
        time.sleep(0.001)
    data = conn.recv(1 << 16 if slow else 1 << 20)
    if not data:
        break
    buf += data
    pos, seqs = 0, []
    while len(buf) - pos >= 4:
        n = int.from_bytes(buf[pos:pos + 4], "big")
        if len(buf) - pos < 4 + n:
            break
        seqs.append(int.from_bytes(buf[pos + 18:pos + 26], "big"))
        pos += 4 + n
    del buf[:pos]
    if seqs:
        ok = all(y == x + 1 for x, y in zip(seqs, seqs[1:]))
        print("got", seqs[0], seqs[-1], len(seqs), int(ok), flush=True)
"""


class KillablePeer:
    """KILLABLE_PEER as a subprocess; its lines are parsed as they come."""

    def __init__(self, port: int, guest: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", KILLABLE_PEER, str(port), guest],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.listening: float | None = None
        self.accepted: float | None = None
        self.runs: list[tuple[int, int, int, int]] = []  # (first, last, count, contiguous)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # the last line of a killed peer may be cut short
            word, *rest = raw.split()
            if word == b"listening":
                self.listening = float(rest[0])
            elif word == b"accepted":
                self.accepted = float(rest[0])
            elif word == b"got":
                first, last, count, ok = map(int, rest)
                self.runs.append((first, last, count, ok))

    @property
    def last(self) -> int:
        return self.runs[-1][1] if self.runs else -1

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self._thread.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOOP4}:{port}/metrics", timeout=5) as response:
        return response.read().decode()  # type: ignore[no-any-return]


@pytest.mark.parametrize("guest", ["keeps-up", "slow"])
def test_acceptance_100k_frames_peer_killed_and_restarted_twice(daemon_process, guest: str) -> None:  # type: ignore[no-untyped-def]
    """One link's TCP peer is killed (SIGKILL) and restarted twice during 100k counted frames.

    keeps-up: both guests send at a steady 25k frames/s and the peer reads at once, so
    little is in flight when it dies. slow: the sender pushes as fast as the peer reads,
    64 KiB/ms, so every buffer on the way is full when it dies: the relay's queue for it
    (counted as lost_on_close) and the kernel's socket buffers (which no relay can count).
    """
    n = 100_000
    la, lc, ld = StreamListener(), StreamListener(), StreamListener()
    pb, mport = free_port(), free_port()
    peers = [KillablePeer(pb, guest)]
    try:
        wait_until(lambda: peers[0].listening is not None, 10, "peer listening")
        proc = daemon_process(f"""[daemon]
metrics = "{LOOP4}:{mport}"
[defaults]
reconnect_max = {RECONNECT_MAX}
[link.flaky]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{pb}"]
queue = "256k"
[link.steady]
endpoints = ["{LOOP4}:{lc.port}", "{LOOP4}:{ld.port}"]
""")
        a, c, d = la.accept(), lc.accept(), ld.accept()
        wait_until(lambda: peers[0].accepted is not None, 5, "relay connected to the peer")
        pad = b"\0" * 106
        head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5"
        frames = [head + struct.pack(">Q", i) + pad for i in range(n)]  # 128 bytes each
        flaky_sender = (counted_sender(a, frames, 1000, 0) if guest == "slow"
                        else counted_sender(a, frames, 250, 0.01))
        steady_sender = counted_sender(c, frames, 250, 0.01)
        steady_got: list[bytes] = []
        steady_rx = threading.Thread(target=lambda: steady_got.extend(d.recv(n, timeout=90)))
        steady_rx.start()

        reconnect = []
        for threshold in (30_000, 65_000):
            wait_until(lambda t=threshold: peers[-1].last >= t, 30, f"peer past {threshold}")
            peers[-1].kill()
            time.sleep(1.0)  # the peer stays away; the relay's back-off reaches its cap
            peers.append(KillablePeer(pb, guest))
            wait_until(lambda: peers[-1].accepted is not None, 5, "relay reconnected")
            assert peers[-1].listening is not None and peers[-1].accepted is not None
            reconnect.append(peers[-1].accepted - peers[-1].listening)
        flaky_sender.join(60)
        steady_sender.join(60)
        wait_until(lambda: peers[-1].last == n - 1, 30, "the last frame at the peer")
        steady_rx.join(60)
        samples, _ = parse_prometheus(_scrape(mport))
    finally:
        for peer in peers:
            peer.stop()

    assert len(steady_got) == n and steady_got == frames  # the other link lost nothing
    received = 0
    previous = -1
    for peer in peers:
        for i, (first, last, count, contiguous) in enumerate(peer.runs):
            assert contiguous and count == last - first + 1 and first > previous
            if i:
                assert first == previous + 1  # no gap while a connection lasts
            previous = last
            received += count
    lost = n - received

    def m(name: str, ep: str, **labels: str) -> int:
        return int(value(samples, name, link="flaky", endpoint=ep, **labels))

    ea, eb = f"{LOOP4}:{la.port}", f"{LOOP4}:{pb}"
    unforwarded = int(value(samples, "fastrelay_link_unforwarded_frames_total", link="flaky"))
    figures = {
        "reconnect_s": [round(t, 3) for t in reconnect],
        "flaky_lost": lost, "steady_lost": n - len(steady_got),
        "reconnects_total": m("fastrelay_reconnects_total", eb),
        "disconnects_total": m("fastrelay_disconnects_total", eb),
        "rx_from_sender": m("fastrelay_received_frames_total", ea),
        "tx_to_peer": m("fastrelay_sent_frames_total", eb),
        "dropped_queue_full": m("fastrelay_dropped_frames_total", eb, reason="queue_full"),
        "unforwarded": unforwarded,
        "lost_on_close_bytes": m("fastrelay_lost_on_close_bytes_total", eb),
        "steady_dropped": sum(int(value(samples, "fastrelay_dropped_frames_total", link="steady",
                                        endpoint=f"{LOOP4}:{p}", reason=r))
                              for p in (lc.port, ld.port)
                              for r in ("queue_full", "invalid", "send_error")),
    }
    print(f"acceptance figures ({guest}):", figures)
    assert all(t < 1.0 for t in reconnect), figures
    assert figures["reconnects_total"] == 2 and figures["disconnects_total"] == 2, figures
    assert figures["steady_lost"] == 0 and figures["steady_dropped"] == 0, figures
    assert figures["rx_from_sender"] == n, figures  # the sender's TCP stream, read in full
    # Every frame the relay read is sent, dropped (counted) or unforwarded (counted); the
    # peer got what was sent, less what died in the killed peer's socket buffers.
    assert figures["tx_to_peer"] + figures["dropped_queue_full"] + unforwarded == n, figures
    assert received <= figures["tx_to_peer"], figures
    # What the relay counts as lost with a closed connection is part of what was lost.
    assert figures["lost_on_close_bytes"] <= lost * (len(frames[0]) + 4), figures
    if guest == "keeps-up":
        assert lost <= 2000, figures
    assert proc.proc.poll() is None


def test_log_lines_name_the_link_and_carry_journal_priorities() -> None:
    import contextvars
    import logging

    from fastrelay.daemon import LogFormatter
    from fastrelay.relay import LINK

    record = logging.LogRecord("fastrelay", logging.WARNING, __file__, 1, "%s: closed", ("tcp x",),
                               None)
    context = contextvars.copy_context()
    context.run(LINK.set, "lab1")
    assert context.run(LogFormatter(journal=True).format, record) == "<4>link lab1: tcp x: closed"
    assert LogFormatter(journal=False).format(record) == "fastrelay: tcp x: closed"


def test_systemd_unit_verifies(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    here = os.path.join(os.path.dirname(__file__), "..", "contrib", "systemd")
    with open(os.path.join(here, "fastrelay.service")) as f:
        unit = f.read()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "CapabilityBoundingSet=\n" in unit  # no capability unless the drop-in adds one
    # verify wants the binary to exist: point it at one that does.
    (tmp_path / "fastrelay.service").write_text(unit.replace("/usr/local/bin/fastrelay",
                                                             sys.executable + " -m fastrelay"))
    run = subprocess.run([analyze, "verify", str(tmp_path / "fastrelay.service")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr

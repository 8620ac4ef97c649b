"""The bench tools' switch options over real sockets: loadgen -d, sink -i/-A/-F (bench/src)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from bench.build import BuildError, build

FRAMES = 200
ANNOUNCE_TYPE = 0x88B6


def bench_mac(ident: int) -> bytes:
    """02:62:65:6e:63:ID, the MAC of bench end ID (bench/src/frame.h)."""
    return bytes([0x02, 0x62, 0x65, 0x6E, 0x63, ident])


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    try:
        return build()
    except BuildError as exc:
        pytest.fail(f"the bench tools do not build: {exc}")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    """The JSON line a bench program prints last, once it has exited."""
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    doc: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return doc


def connect(port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:PORT, retried while the program is not listening yet."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.mark.parametrize("dst, counted", [(5, True), (6, False), (None, True)],
                         ids=["to-it", "to-another", "broadcast"])
def test_sink_counts_only_frames_addressed_to_it(bins, dst, counted):
    # The sink is end 5 and filters (-F): frames to end 5 or to broadcast count, frames to
    # end 6 are a hub's copy for another port and are set apart as "foreign".
    port = free_tcp_port()
    sink = subprocess.Popen([str(bins["sink"]), "-t", "20", "-T", "10", "-I", "0.5",
                             "-i", "5", "-F", f"tcp-listen:127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gen_args = ["-i", "1"] + (["-d", str(dst)] if dst is not None else [])
    gen = subprocess.run([str(bins["loadgen"]), "-n", str(FRAMES), "-s", "100", "-T", "10",
                          *gen_args, f"tcp:127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(gen.stdout)["frames"] == FRAMES
    got = result(sink)
    assert got["corrupt"] == 0
    if counted:
        assert (got["frames"], got["foreign"], got["lost"]) == (FRAMES, 0, 0)
    else:
        assert (got["frames"], got["foreign"]) == (0, FRAMES)


def test_loadgen_unicast_frames_carry_the_destination_mac(bins):
    # What a switch looks at: the destination and source MACs of every frame on the wire.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        gen = subprocess.Popen([str(bins["loadgen"]), "-n", "3", "-s", "64", "-i", "9",
                                "-d", "42", f"tcp:127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while len(data) < 3 * 68:
                chunk = conn.recv(4096)
                assert chunk, f"loadgen closed after {len(data)} bytes"
                data += chunk
    assert result(gen)["frames"] == 3
    for k in range(3):
        rec = data[k * 68:(k + 1) * 68]
        assert struct.unpack("!I", rec[:4])[0] == 64
        assert rec[4:10] == bench_mac(42) and rec[10:16] == bench_mac(9)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_sink_announces_its_mac_first(bins, kind):
    # One 64-byte broadcast from the sink's MAC, of the announcement ethertype, before any
    # frame arrives: what lets a switch learn the port of an end that only receives.
    stype = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, stype) as peer:
        peer.bind(("127.0.0.1", 0))
        port = peer.getsockname()[1]
        if kind == "tcp":
            peer.listen(1)
            spec = f"tcp:127.0.0.1:{port}"
        else:
            spec = f"udp:{free_udp_port()}:127.0.0.1:{port}"
        sink = subprocess.Popen([str(bins["sink"]), "-t", "5", "-I", "0.2", "-T", "10",
                                 "-i", "7", "-A", spec],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            peer.settimeout(10)
            if kind == "tcp":
                conn, _ = peer.accept()
                with conn:
                    conn.settimeout(10)
                    data = b""
                    while len(data) < 68:
                        chunk = conn.recv(68 - len(data))
                        assert chunk, "sink closed before announcing"
                        data += chunk
                assert struct.unpack("!I", data[:4])[0] == 64
                frame = data[4:]
            else:
                frame = peer.recv(2048)
        finally:
            sink.terminate()
    assert len(frame) == 64
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bench_mac(7)
    assert struct.unpack("!H", frame[12:14])[0] == ANNOUNCE_TYPE
    assert result(sink)["frames"] == 0


def test_sink_skips_announcements_of_other_ends(bins):
    # A switch floods every end's announcement to the others: a sink must neither count it
    # nor call it corrupt.
    port = free_tcp_port()
    sink = subprocess.Popen([str(bins["sink"]), "-t", "20", "-T", "10", "-I", "0.5",
                             "-i", "5", "-F", f"tcp-listen:127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    announce = b"\xff" * 6 + bench_mac(8) + struct.pack("!H", ANNOUNCE_TYPE) + bytes(50)
    with connect(port) as conn:
        conn.sendall(struct.pack("!I", 64) + announce)
    got = result(sink)
    assert (got["announces"], got["frames"], got["corrupt"], got["foreign"]) == (1, 0, 0, 0)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wakecost_reports_each_cost_as_cpu_time(bins):
    """wakecost (printed under bench.perframe's table) measures a syscall, a 50 us sleep and
    a cross-CPU wake-up. The sleep really slept, and each figure is CPU time, so none is
    zero and none exceeds what the call took on the wall clock (a sleep's CPU is not its
    50 us)."""
    other = str(min(os.sched_getaffinity(0)))
    proc = subprocess.Popen([str(bins["wakecost"]), "-o", other],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    doc = result(proc)
    assert doc["sleep_request_us"] == 50
    assert float(doc["sleep_wall_us"]) >= 50      # clock_nanosleep never returns early
    assert 0 < float(doc["sleep_us"]) < float(doc["sleep_wall_us"])
    assert 0 < float(doc["syscall_ns"]) < 1_000_000
    assert 0 < float(doc["wake_us"]) < 100_000

"""Short end-to-end benchmarks: a fixed number of frames through a fastrelay subprocess.

TCP only: a lossless stream makes "time to deliver N frames" a throughput figure. The UDP
path is covered by test_micro.py's batch benchmark and, one datagram per frame, by
test_dgram_per_frame.py (a UDP transfer at full speed loses frames when the sender
outruns anything, so its duration says little).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.build import build
from bench.procs import PortPool, tcp_connected, tcp_listening, wait_until

# Frames per round by frame size: tens of ms here. Rounds are short and many, because
# three processes on a shared machine are rarely all undisturbed for long; the best
# round is the one that was.
FRAMES = {64: 100_000, 1500: 20_000}
ROUNDS = 12
SHORT_ROUNDS = 5  # --bench-short


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    return build()


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)
    procs.clear()


@pytest.mark.parametrize("size", [64, 1500])
def test_tcp_p2p_transfer(benchmark, bins, short, size: int) -> None:  # type: ignore[no-untyped-def]
    """100k or 20k frames: loadgen -> fastrelay (connects out to both) -> sink, over TCP.

    Each round starts the three processes and waits until the relay has connected both
    ends, untimed; the time is from the sender's start signal to the sink's last frame,
    so interpreter start-up and connection set-up, which would dominate, stay out of it.
    """
    frames = FRAMES[size]
    procs: list[subprocess.Popen[str]] = []  # the round's processes, stopped by the next

    def setup() -> tuple[tuple[subprocess.Popen[str], subprocess.Popen[str]], dict[str, object]]:
        _stop(procs)
        pool = PortPool()
        p_gen, p_sink = pool.take(), pool.take()
        gen = subprocess.Popen([str(bins["loadgen"]), "-g", "-n", str(frames), "-s", str(size),
                                "-t", "30", f"tcp-listen:127.0.0.1:{p_gen}"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        procs.append(gen)
        sink = subprocess.Popen([str(bins["sink"]), "-n", str(frames), "-t", "60", "-I", "2",
                                 f"tcp-listen:127.0.0.1:{p_sink}"], stdout=subprocess.PIPE,
                                text=True)
        procs.append(sink)
        wait_until("listeners", lambda: tcp_listening(p_gen) and tcp_listening(p_sink), 10)
        procs.append(subprocess.Popen([sys.executable, "-m", "fastrelay", f"127.0.0.1:{p_gen}",
                                       f"127.0.0.1:{p_sink}"], stderr=subprocess.DEVNULL,
                                      text=True))
        wait_until("relay connected", lambda: tcp_connected(p_gen) and tcp_connected(p_sink), 10)
        return (gen, sink), {}

    def run(gen: subprocess.Popen[str], sink: subprocess.Popen[str]) -> None:
        assert gen.stdin is not None
        gen.stdin.write("go\n")
        gen.stdin.flush()
        out, _ = sink.communicate(timeout=60)
        assert f'"frames": {frames},' in out, out

    try:
        benchmark.pedantic(run, setup=setup, rounds=SHORT_ROUNDS if short else ROUNDS,
                           warmup_rounds=0)
    finally:
        _stop(procs)
    benchmark.extra_info["frames_per_s"] = frames / benchmark.stats.stats.min

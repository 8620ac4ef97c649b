"""Short end-to-end benchmarks: a fixed number of frames through a fastrelay subprocess.

TCP only: a lossless stream makes "time to deliver N frames" a throughput figure. The UDP
path is covered by test_micro.py's batch benchmark (a UDP transfer loses frames when the
sender outruns anything, so its duration says little).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.build import build
from bench.procs import PortPool, tcp_listening, wait_until

FRAMES = 200_000


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    return build()


@pytest.mark.parametrize("size", [64, 1500])
def test_tcp_p2p_transfer(benchmark, bins, size: int) -> None:  # type: ignore[no-untyped-def]
    """200k frames: loadgen -> fastrelay (connects out to both) -> sink, over TCP."""
    def run() -> None:
        pool = PortPool()
        p_gen, p_sink = pool.take(), pool.take()
        gen = subprocess.Popen([str(bins["loadgen"]), "-n", str(FRAMES), "-s", str(size),
                                "-t", "30", f"tcp-listen:127.0.0.1:{p_gen}"],
                               stdout=subprocess.DEVNULL)
        sink = subprocess.Popen([str(bins["sink"]), "-n", str(FRAMES), "-t", "30", "-I", "2",
                                 f"tcp-listen:127.0.0.1:{p_sink}"], stdout=subprocess.PIPE,
                                text=True)
        relay = None
        try:
            wait_until("listeners", lambda: tcp_listening(p_gen) and tcp_listening(p_sink), 10)
            relay = subprocess.Popen([sys.executable, "-m", "fastrelay", f"127.0.0.1:{p_gen}",
                                      f"127.0.0.1:{p_sink}"], stderr=subprocess.DEVNULL)
            out, _ = sink.communicate(timeout=60)
            assert f'"frames": {FRAMES},' in out, out
        finally:
            for p in (relay, gen, sink):
                if p is not None:
                    if p.poll() is None:
                        p.kill()
                    p.communicate(timeout=10)

    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    benchmark.extra_info["frames_per_s"] = FRAMES / benchmark.stats.stats.min

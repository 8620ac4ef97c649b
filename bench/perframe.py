"""One datagram per frame (issue 14): relay CPU per frame behind a qemu-paced sender, vs netrelay.

qemu sends every frame with its own sendto(). At 100k frames/s such a sender wakes a relay
that keeps up with it about once per frame, so what a relay spends per wake-up, not per
byte, decides its CPU. The point: `loadgen -p qemu -r 100000` -> relay (UDP point to point)
-> sink, relay pinned to core 1, at 64 and 1500 B, for fastrelay as it ships (batch wait
on), fastrelay with `--batch-wait-us 0`, and netrelay when it is on PATH; in `--rounds`
rounds, the variants' order turning each round, each point keeping its round with the
least relay CPU per frame (a shared machine only ever adds to it).

`python -m bench.results` runs it with everything else; `python -m bench.perframe` runs
only this part and prints its section.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build, sections
from .runner import Options

RATE = 100000
SIZES = "64,1500"
ROUNDS = 3
GOAL = 0.6  # fastrelay's CPU per frame over netrelay's, at most
# (label, scenario, extra fastrelay arguments or None for another relay)
VARIANTS: list[tuple[str, str, str | None]] = [
    ("fastrelay", "fastrelay-udp-p2p", ""),
    ("fastrelay --batch-wait-us 0", "fastrelay-udp-p2p", "--batch-wait-us 0"),
    ("netrelay", "netrelay-udp-p2p", None),
]


def run_rounds(run: Callable[[list[str]], int], seconds: float,
               rounds: int = ROUNDS) -> tuple[int, Measured]:
    """Run every variant `rounds` times through @run (bench's main); the best row of each,
    and then the machine's wake-up costs.

    Returns (status, Measured); a variant whose relay is not there (netrelay off PATH) has
    no rows.
    """
    best: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fastrelay-perframe-") as tmp:
        for rnd in range(rounds):
            order = VARIANTS[rnd % len(VARIANTS):] + VARIANTS[:rnd % len(VARIANTS)]
            for k, (label, scenario, extra) in enumerate(order):
                out = Path(tmp) / f"round{rnd}-{k}.json"
                args = ["--scenarios", scenario, "--sizes", SIZES, "--seconds", f"{seconds:g}",
                        "--pacing", "qemu", "--rate", str(RATE), "--pin", "--no-latency",
                        "--json", str(out)]
                if extra is not None:
                    args += ["--fastrelay-cmd",
                             shlex.join([sys.executable, "-m", "fastrelay", *extra.split()])]
                run(args)
                for row in json.loads(out.read_text())["rows"]:
                    if row.get("skipped"):
                        continue
                    key = (label, row["size"])
                    if _better(row, best.get(key)):
                        best[key] = row
    status = int(any(r.get("error") for r in best.values()))
    return status, Measured(best, wake_costs())


@dataclass
class Measured:
    """What run_rounds() measured: the best row of each (variant label, size), and the
    machine's wake-up costs (wake_costs(), None if the probe could not run)."""
    best: dict[tuple[str, int], dict[str, Any]]
    costs: dict[str, Any] | None


def wake_costs() -> dict[str, Any] | None:
    """What this machine charges for a syscall, a batch-wait sleep and a cross-CPU wake-up
    (bench/src/wakecost.c), measured on the relay's CPU; None if it cannot run."""
    try:
        exe = build.build()["wakecost"]
        res = subprocess.run(["taskset", "-c", str(Options.relay_cpu), str(exe),
                              "-o", str(Options.tool_cpu)],
                             capture_output=True, text=True, timeout=60, check=True)
        costs: dict[str, Any] = json.loads(res.stdout)
        return costs
    except (build.BuildError, OSError, subprocess.SubprocessError, ValueError) as e:
        print(f"bench.perframe: wakecost: {e}", file=sys.stderr)
        return None


def _better(row: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether @row should replace @old: no error, then less relay CPU per frame."""
    if old is None:
        return True
    if row.get("error"):
        return bool(old.get("error"))
    if old.get("error"):
        return True
    return (row.get("relay_ns_per_frame") or float("inf")) < (
        old.get("relay_ns_per_frame") or float("inf"))


def ratio(best: dict[tuple[str, int], dict[str, Any]], size: int,
          label: str = "fastrelay") -> float | None:
    """@label's relay CPU per frame over netrelay's at @size, or None if either is missing."""
    ours = best.get((label, size), {}).get("relay_ns_per_frame")
    theirs = best.get(("netrelay", size), {}).get("relay_ns_per_frame")
    return ours / theirs if ours and theirs else None


def section(measured: Measured, seconds: float, rounds: int = ROUNDS,
            origin: str | None = None) -> str:
    """The markdown section: the goal per size, every point, the machine's costs."""
    best, costs = measured.best, measured.costs
    sizes = sorted({size for _, size in best})
    out = ["## One datagram per frame (issue 14)", ""]
    if origin:
        out += [origin, ""]
    out += [(f"`loadgen -p qemu -r {RATE}` (one sendto() per frame, one frame every 10 us) -> "
             "relay, UDP point to point -> sink; relay pinned to core 1. "
             f"{rounds} rounds of {seconds:g} s, the variants' order turning each round; "
             "each point keeps its round with the least relay CPU per frame."), "",
            "| size | fastrelay / netrelay CPU per frame | goal | |", "|---|---|---|---|"]
    for size in sizes:
        r = ratio(best, size)
        verdict = "n/a" if r is None else "met" if r <= GOAL else "NOT met"
        cell = "n/a (no netrelay)" if r is None else f"{r:.2f}x"
        out.append(f"| {size} | {cell} | <= {GOAL:g}x | {verdict} |")
    out += ["", ("| relay | size | frames/s delivered | loss % | relay ns/frame | x netrelay CPU "
                 "| sent late % |"),
            "|---|---:|---:|---:|---:|---:|---:|"]
    for label, _, _ in VARIANTS:
        for size in sizes:
            row = best.get((label, size))
            if row is None:
                continue
            if row.get("error"):
                out.append(f"| {label} | {size} | failed: {row['error']} | | | | |")
                continue
            r = ratio(best, size, label) if label != "netrelay" else None
            late = 100 * (row.get("bunched") or 0) / max(1, row.get("sent") or 0)
            out.append(f"| {label} | {size} | {row.get('fps_total') or 0:,.0f} | "
                       f"{row.get('loss_pct') or 0:.2f} | {row.get('relay_ns_per_frame') or 0:,.0f} | "
                       f"{'-' if r is None else f'{r:.2f}x'} | {late:.2f} |")
    out += ["", ("Relay CPU is utime + stime of the relay process over the frames it "
                 "delivered (10 ms ticks). netrelay reads each socket with a blocking "
                 "recvfrom() in its own thread and select(); a frame it cannot read in time "
                 "is lost in its socket buffer (its loss column), which costs it no CPU. "
                 "Sent late: frames loadgen sent less than a quarter interval after the one "
                 "before (it fell behind and caught up), so that they reached the relay "
                 "together; loadgen spins the end of each wait so that they do not. "
                 "bench/README.md, \"One datagram per frame\", explains the batch wait.")]
    if costs:
        out += ["", (f"What this machine charges, measured on the relay's core "
                     f"(`bench/.build/wakecost`, CPU time of the caller): a syscall "
                     f"{costs['syscall_ns']:.0f} ns; a {costs['sleep_request_us']} us timer "
                     f"sleep, as the batch wait sleeps, {costs['sleep_us']:.1f} us (it slept "
                     f"{costs['sleep_wall_us']:.0f} us); waking a thread blocked on the other "
                     f"core, as a send wakes the sink, {costs['wake_us']:.1f} us. A round of "
                     "the batch wait pays one sleep and usually one wake of the sink, "
                     "shared by its frames; bench/README.md says what follows.")]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run this part alone and print its RESULTS.md section; 1 if a point failed."""
    return sections.standalone("perframe", __doc__, "--no-perframe", 2.0, ROUNDS, run_rounds, section,
                               argv)


if __name__ == "__main__":
    sys.exit(main())

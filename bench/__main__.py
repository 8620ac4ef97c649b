"""Command line of the benchmark runner: `python -m bench [--smoke] [--scenarios ...] ...`."""

from __future__ import annotations

import argparse
import fnmatch
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .build import BuildError, build
from .report import markdown_table, text_table, to_json
from .runner import Options, Row, Runner, add_ratios, cpu_count
from .scenarios import all_scenarios, availability, select
from .tap import (
    FRAME_SCENARIOS,
    TAP_SCENARIOS,
    TapRow,
    TapRunner,
    add_tap_ratios,
    best_tap_rows,
    tap_missing_reason,
    tap_table,
)

# Small enough for CI to run in seconds, wide enough to touch every code path:
# UDP and TCP framing, a hub, both baselines, the mixed case, and a switch with several
# senders and announced receivers, and two switches joined by VXLAN.
SMOKE_SCENARIOS = ["direct-udp", "direct-tcp", "naive-udp-p2p", "naive-tcp-hub-2",
                   "fastrelay-udp-p2p", "fastrelay-tcp-p2p", "fastrelay-tcp-hub-2",
                   "fastrelay-mixed", "fastrelay-tcp-switch-pairs-8", "fastrelay-vxlan-link"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, with --smoke filling in short defaults."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--scenarios", help="comma-separated names or globs (default: all; see --list)")
    ap.add_argument("--sizes", default=None, help="frame sizes, comma-separated (default 64,1500)")
    ap.add_argument("--seconds", type=float, default=None, help="sending time per point (default 2)")
    ap.add_argument("--latency-seconds", type=float, default=None,
                    help="ping-pong time per point (default: half of --seconds)")
    ap.add_argument("--no-latency", action="store_true", help="skip the ping-pong phase")
    ap.add_argument("--pacing", choices=["bulk", "qemu"], default="bulk",
                    help="bulk: batched sends at full speed; qemu: one send syscall per frame")
    ap.add_argument("--rate", type=float, default=0.0, metavar="FPS",
                    help="cap the sender at FPS frames/s (loss-free UDP comparisons)")
    ap.add_argument("--pin", action="store_true",
                    help="relay on CPU --relay-cpu, generator and sinks on --tool-cpu")
    ap.add_argument("--relay-cpu", type=int, default=1)
    ap.add_argument("--tool-cpu", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run for CI: 0.3 s points, 64-byte frames, a few scenarios")
    ap.add_argument("--strict", action="store_true",
                    help="fail if fastrelay scenarios are skipped because it does not import")
    ap.add_argument("--fastrelay-cmd", metavar="CMD",
                    help="command run as fastrelay instead of `python -m fastrelay` "
                         "(split like a shell would; scenario arguments are appended)")
    ap.add_argument("--tap-rounds", type=int, default=3, metavar="N",
                    help="tap frame scenarios: alternate N rounds, keep each one's best")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every command started")
    args = ap.parse_args(argv)
    if args.smoke:
        args.scenarios = args.scenarios or ",".join(SMOKE_SCENARIOS)
        args.sizes = args.sizes or "64"
        args.seconds = args.seconds or 0.3
        args.latency_seconds = args.latency_seconds or 0.2
    args.sizes = args.sizes or "64,1500"
    args.seconds = args.seconds or 2.0
    args.latency_seconds = args.latency_seconds or max(0.2, args.seconds / 2)
    if not 0.05 <= args.seconds <= 60 or not 0.05 <= args.latency_seconds <= 60:
        ap.error("--seconds and --latency-seconds must be within 0.05..60: runs stay short")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build, run the selected points, print the table. Exit 1 if any point failed."""
    args = parse_args(argv)
    fastrelay_cmd = shlex.split(args.fastrelay_cmd) if args.fastrelay_cmd else None
    avail = availability(fastrelay_cmd)
    tap_why = tap_missing_reason()
    if args.list:
        for sc in all_scenarios():
            why = avail[sc.relay]
            print(f"{sc.name:24} {'(skipped: ' + why + ')' if why else ''}")
        for name in TAP_SCENARIOS:
            print(f"{name:24} {'(skipped: ' + tap_why + ')' if tap_why else ''}")
        return 0
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        print(f"bench: bad --sizes {args.sizes!r}", file=sys.stderr)
        return 2
    if not sizes or any(not 64 <= s <= 65000 for s in sizes):
        print("bench: sizes must be within 64..65000", file=sys.stderr)
        return 2
    # Tap scenarios run in namespaces of their own (bench/tap.py); only when named.
    patterns = args.scenarios.split(",") if args.scenarios else []
    tap_names = [n for n in TAP_SCENARIOS if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    patterns = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in TAP_SCENARIOS)
                or any(fnmatch.fnmatchcase(s.name, p) for s in all_scenarios())]
    if tap_names and not patterns:
        scenarios = []
    elif args.scenarios:
        scenarios = select(patterns)
    else:
        # Asked for nothing in particular: leave out relays that cannot run here
        # rather than fill the table with skipped rows.
        scenarios = [s for s in all_scenarios() if not avail[s.relay]]
        for relay, why in avail.items():
            if why:
                print(f"bench: leaving out {relay}-*: {why}", file=sys.stderr)
    pin = args.pin
    if pin and cpu_count() < 2:
        print("bench: --pin needs two CPUs; running unpinned", file=sys.stderr)
        pin = False
    try:
        bins = build(verbose=args.verbose)
    except BuildError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    opts = Options(sizes=sizes, seconds=args.seconds, latency_seconds=args.latency_seconds,
                   latency=not args.no_latency, pacing=args.pacing, rate=args.rate, pin=pin,
                   relay_cpu=args.relay_cpu, tool_cpu=args.tool_cpu, verbose=args.verbose,
                   fastrelay_cmd=fastrelay_cmd)
    runner = Runner(bins, opts)
    rows: list[Row] = []
    started = time.time()
    for sc in scenarios:
        for size in sizes:
            why = avail[sc.relay]
            if why:
                row = Row(sc.name, sc.relay, sc.shape, size, sc.nsinks, skipped=why)
            else:
                row = runner.run_point(sc, size)
            rows.append(row)
            status = row.skipped and "skipped" or row.error and "ERROR" or "ok"
            print(f"bench: {sc.name} size {size}: {status}", file=sys.stderr)

    tap_rows: list[TapRow] = []
    if tap_names and tap_why:
        print(f"bench: tap scenarios skipped: {tap_why}", file=sys.stderr)
    elif tap_names:
        tap_runner = TapRunner(bins, opts.seconds, pin, opts.relay_cpu, opts.tool_cpu,
                               fastrelay_cmd, args.verbose)
        # Rounds alternate baseline and fastrelay and the best of each is kept: on a
        # shared machine the least disturbed round is the one that says what each can do.
        for rnd in range(args.tap_rounds):
            for name in tap_names:
                if rnd and name not in FRAME_SCENARIOS:
                    continue
                for size in sizes if name in FRAME_SCENARIOS else sizes[:1]:
                    tap_rows.append(tap_runner.run(name, size))
                    status = "ERROR" if tap_rows[-1].error else "ok"
                    print(f"bench: {name} size {size} round {rnd + 1}: {status}",
                          file=sys.stderr)
        tap_rows = best_tap_rows(tap_rows)
        add_tap_ratios(tap_rows)

    baselines = add_ratios(rows)
    if rows:
        print(markdown_table(rows, baselines) if args.markdown else text_table(rows, baselines))
    if tap_rows:
        print(tap_table(tap_rows, args.markdown))
    if args.json:
        meta = {"started": started, "host": platform.node(), "cpus": cpu_count(),
                "python": sys.version.split()[0], "seconds": opts.seconds,
                "latency_seconds": opts.latency_seconds, "pacing": opts.pacing,
                "rate": opts.rate, "pin": pin,
                "sizes": sizes, "kernel": platform.release(),
                "fastrelay_cmd": fastrelay_cmd or [sys.executable, "-m", "fastrelay"]}
        if tap_rows:
            meta["tap_rows"] = [asdict(r) for r in tap_rows]
        Path(args.json).write_text(to_json(rows, meta) + "\n")
    failed = [r for r in rows if r.error]
    for tr in tap_rows:
        if tr.error:
            print(f"bench: {tr.scenario} size {tr.size} failed: {tr.error}", file=sys.stderr)
    strict_skips = [r for r in rows if args.strict and r.skipped and r.relay == "fastrelay"]
    for r in failed:
        print(f"bench: {r.scenario} size {r.size} failed: {r.error}", file=sys.stderr)
    if strict_skips:
        print(f"bench: --strict: {len(strict_skips)} fastrelay points skipped: "
              f"{strict_skips[0].skipped}", file=sys.stderr)
    return 1 if failed or strict_skips or any(tr.error for tr in tap_rows) else 0


if __name__ == "__main__":
    sys.exit(main())

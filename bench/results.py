"""Regenerate bench/RESULTS.md and its charts from one run on this machine: `python -m bench.results`.

Runs the scenario matrix (every scenario at every frame size, relay pinned to one core),
the switch-mode scenarios (hub against switch, bench/switching.py), the tap scenarios
unless --no-taps, the one-datagram-per-frame comparison with netrelay (bench/perframe.py)
unless --no-perframe, the VXLAN link against the UDP link (bench/overlay.py) unless
--no-overlay, the TLS links unless --no-tls, then the guest-to-guest iperf3 runs
of tests/qemu (3 rounds) unless --no-qemu, and writes the tables, the ratios the issues
ask for (each taken within this one run) and PNG charts. A full run takes about 15
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import __main__ as bench_main
from . import switching

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = [64, 512, 1500, 9000, 65000]
SCENARIOS = [
    "direct-udp", "direct-tcp",
    "fastrelay-udp-p2p", "naive-udp-p2p", "netrelay-udp-p2p",
    "fastrelay-tcp-p2p", "naive-tcp-p2p", "netrelay-tcp-p2p", "fastrelay-mixed",
    "fastrelay-tcp-hub-2", "fastrelay-tcp-hub-4", "fastrelay-tcp-hub-8",
    "naive-tcp-hub-2", "naive-tcp-hub-4", "naive-tcp-hub-8",
    "netrelay-tcp-hub-2",
    "fastrelay-udp-hub-2", "fastrelay-udp-hub-4", "fastrelay-udp-hub-8",
    "fastrelay-udp-link", "fastrelay-vxlan-link",
]


# Latency is measured unpinned: pinned, every hop must wake an idle vCPU on the other
# core (~30 us here, for naive as much as for fastrelay), which says nothing about a relay.
LATENCY_ROUNDS = 3
LATENCY_SCENARIOS = ["direct-udp", "direct-tcp", "fastrelay-udp-p2p", "naive-udp-p2p",
                     "fastrelay-tcp-p2p", "naive-tcp-p2p", "fastrelay-tcp-hub-2",
                     "naive-tcp-hub-2"]


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "fastrelay"],
                           capture_output=True, text=True, check=False).stdout.strip()
    import shutil

    netrelay = shutil.which("netrelay")
    return {"cpu": cpu, "cores": str(bench_main.cpu_count()), "kernel": platform.release(),
            "netrelay": (f"`{netrelay}` (on PATH: its rows are measured)" if netrelay
                         else "not on PATH (its rows are left out)"),
            "python": sys.version.split()[0], "fastrelay": rev + (" (modified)" if dirty else ""),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def rows_by(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["scenario"], r["size"]): r for r in rows}


def ratio(rows: dict[tuple[str, int], dict[str, Any]], a: str, b: str, size: int,
          key: str = "fps_per_sink") -> float | None:
    ra, rb = rows.get((a, size)), rows.get((b, size))
    if not ra or not rb or not ra.get(key) or not rb.get(key):
        return None
    return float(ra[key]) / float(rb[key])


def fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def charts(rows: list[dict[str, Any]], outdir: Path) -> list[tuple[str, str]]:
    """Write the PNG charts; return (file name, caption) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = rows_by(rows)
    sizes = sorted({r["size"] for r in rows})
    outdir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, str]] = []

    def line_chart(name: str, title: str, series: list[str], key: str, ylabel: str,
                   log: bool = True) -> None:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for sc in series:
            pts = [(s, by[(sc, s)].get(key)) for s in sizes if (sc, s) in by]
            pts = [(s, v) for s, v in pts if v]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sc,
                        linestyle="--" if sc.startswith(("naive", "netrelay")) else "-")
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel("frame size (bytes)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / name)
        plt.close(fig)
        made.append((name, title))

    udp = ["direct-udp", "fastrelay-udp-p2p", "naive-udp-p2p", "netrelay-udp-p2p"]
    tcp = ["direct-tcp", "fastrelay-tcp-p2p", "fastrelay-tcp-hub-2", "naive-tcp-hub-2",
           "netrelay-tcp-hub-2"]
    line_chart("udp-frames.png", "UDP: frames/s delivered (saturated sender)", udp,
               "fps_per_sink", "frames/s")
    line_chart("tcp-frames.png", "TCP: frames/s delivered (bulk sender)", tcp,
               "fps_per_sink", "frames/s")
    line_chart("gbits.png", "Throughput per receiver", udp[:3] + tcp[:4], "gbit_per_sink",
               "Gbit/s")

    # Hub scaling: total frames/s delivered to all receivers at 1500 bytes.
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ns = [2, 4, 8]
    for family in ("fastrelay-tcp-hub", "naive-tcp-hub", "fastrelay-udp-hub"):
        pts = [(n, by.get((f"{family}-{n}", 1500), {}).get("fps_total")) for n in ns]
        pts = [(n, v) for n, v in pts if v]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=family)
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xlabel("hub ports (1 sender, N-1 receivers)")
    ax.set_ylabel("frames/s delivered, all receivers")
    ax.set_title("Hub fan-out at 1500-byte frames")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "hub-fanout.png")
    plt.close(fig)
    made.append(("hub-fanout.png", "Hub fan-out at 1500-byte frames"))

    line_chart("latency.png", "Ping-pong round trip p50 (one frame in flight)",
               ["direct-udp", "fastrelay-udp-p2p", "naive-udp-p2p", "direct-tcp",
                "fastrelay-tcp-p2p", "fastrelay-tcp-hub-2", "naive-tcp-hub-2"],
               "p50_us", "microseconds", log=False)
    return made


def render(meta: dict[str, str], command: str, rows: list[dict[str, Any]],
           table_md: str, iperf: list[dict[str, Any]] | None, made: list[tuple[str, str]],
           extra: str, switch_md: str | None = None,
           overlay: dict[tuple[str, int], dict[str, Any]] | None = None) -> str:
    """The text of RESULTS.md. @overlay: bench.overlay's best rounds, which the VXLAN
    acceptance row is taken from when given (the matrix's single point otherwise)."""
    by = rows_by(rows)
    out = [
        "# fastrelay benchmark results",
        "",
        "Regenerated by one command; every ratio below comes from this one run on this machine",
        "(the machines are shared and noisy, so only same-run ratios mean anything).",
        "",
        "```",
        command,
        "```",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, "
        f"Python {meta['python']}",
        f"- fastrelay: {meta['fastrelay']}",
        f"- netrelay: {meta['netrelay']}",
        "- method: throughput with the relay pinned to core 1 (`taskset`), load generator and",
        "  sinks on core 0; latency (ping-pong, one frame in flight, 3 s a point) unpinned,",
        f"  {LATENCY_ROUNDS} rounds (scenario order reversed every other round), each point's lowest p50;",
        "  compiled load generator and sink (bench/src) emulate qemu endpoints; bulk senders",
        "  saturate (UDP with GSO, TCP with 256 KiB writes); `naive` is bench/src/naive.c, a",
        "  netrelay-style relay (4-byte recv, payload recv, two sends / recvfrom + sendto).",
        "",
        "## Acceptance figures",
        "",
        "| what | 64 B | 1500 B | required |",
        "|---|---|---|---|",
    ]

    def both(a: str, b: str, key: str = "fps_per_sink") -> tuple[str, str]:
        return fmt_ratio(ratio(by, a, b, 64, key)), fmt_ratio(ratio(by, a, b, 1500, key))

    h64, h1500 = both("fastrelay-tcp-hub-2", "naive-tcp-hub-2")
    out.append(f"| TCP hub, 2 clients, frames/s vs naive | {h64} | {h1500} | >= 50x / >= 8x |")
    u64, u1500 = both("fastrelay-udp-p2p", "naive-udp-p2p")
    out.append(f"| UDP point to point, frames/s vs naive | {u64} | {u1500} | >= 2x / >= 2x |")
    if ("netrelay-tcp-hub-2", 64) in by and by[("netrelay-tcp-hub-2", 64)].get("fps_per_sink"):
        n64, n1500 = both("fastrelay-tcp-hub-2", "netrelay-tcp-hub-2")
        out.append(f"| TCP hub, 2 clients, frames/s vs netrelay | {n64} | {n1500} | (reference) |")
        n64, n1500 = both("fastrelay-udp-p2p", "netrelay-udp-p2p")
        out.append(f"| UDP point to point, frames/s vs netrelay | {n64} | {n1500} | (reference) |")
    if overlay is not None:
        from . import overlay as overlay_bench

        v64, v1500 = (fmt_ratio(overlay_bench.ratio(overlay, size)) for size in (64, 1500))
        where = f"best of {overlay_bench.ROUNDS} rounds, see its section"
    else:
        v64, v1500 = both("fastrelay-vxlan-link", "fastrelay-udp-link")
        where = "one point each"
    out.append(f"| VXLAN link between two switches, frames/s vs the plain UDP link ({where}) "
               f"| {v64} | {v1500} | >= 0.9x at 1500 B |")
    for relay, direct in (("fastrelay-udp-p2p", "direct-udp"), ("fastrelay-tcp-p2p", "direct-tcp")):
        cells = []
        for size in (64, 1500):
            a, b = by.get((relay, size), {}).get("p50_us"), by.get((direct, size), {}).get("p50_us")
            cells.append(f"{a - b:+.1f} us" if a is not None and b is not None else "n/a")
        out.append(f"| added p50 latency, {relay} minus {direct} | {cells[0]} | {cells[1]} "
                   f"| <= 50 us |")
    for relay, direct in (("fastrelay-udp-p2p", "direct-udp"), ("fastrelay-tcp-p2p", "direct-tcp"),
                          ("fastrelay-tcp-hub-2", "direct-tcp")):
        a, b = both(relay, direct)
        out.append(f"| {relay} frames/s vs {direct} (no relay) | {a} | {b} | (reference) |")
    out += ["", "## Every scenario and frame size", "",
            "`x naive`: frames/s per receiver over naive's in the same scenario shape and size; "
            "`cpu x naive`: naive's relay CPU per frame over fastrelay's; `x direct`: over the "
            "direct qemu link of the same framing (no relay). Loss is against what the sender "
            "sent: a saturated UDP sender outruns every relay.", "", table_md, ""]
    if switch_md:
        out += [switch_md, ""]
    if made:
        out += ["## Charts", ""]
        for name, caption in made:
            out += [f"![{caption}](charts/{name})", ""]
    if iperf is not None:
        out += iperf_section(iperf)
    if extra:
        out += [extra.rstrip(), ""]
    return "\n".join(out)


IPERF_ROUNDS = 3
IPERF_GOALS = (("relay-udp-p2p", "direct-udp", 1.0), ("relay-tcp-hub", "direct-tcp", 1.0))
# Shown beside the goals when measured: the same UDP hop through netrelay (on PATH).
IPERF_REFERENCES = (("netrelay-udp-p2p", "direct-udp"),)


def iperf_section(runs: list[dict[str, Any]]) -> list[str]:
    """The guest iperf3 section: each mode's best round, its ratios, and the issue's goals."""
    best: dict[str, dict[str, Any]] = {}
    each: dict[str, list[str]] = {}
    for r in runs:
        mode = r["mode"]
        each.setdefault(mode, []).append("failed" if "error" in r else f"{r['gbit_per_s']:.3f}")
        if "error" not in r and r["gbit_per_s"] > best.get(mode, {}).get("gbit_per_s", -1):
            best[mode] = r
    rounds = max((r.get("round", 0) for r in runs), default=0) + 1

    def vs(mode: str, base: str) -> float | None:
        a, b = best.get(mode), best.get(base)
        return a["gbit_per_s"] / b["gbit_per_s"] if a and b and b["gbit_per_s"] else None

    out = ["## Real qemu guests: iperf3 guest to guest (issues 4 and 14)", "",
           (f"Two TCG guests (tests/qemu), iperf3 TCP for the stated seconds per mode, "
            f"{rounds} rounds (the modes in reverse order every other round), each mode's "
            "best round shown. Gbit/s mostly measures qemu under TCG (the TCP loop through "
            "two emulated guests; bench/README.md, \"Guests over UDP: what sets the gap\"); "
            "the relay's own CPU seconds per GB carried is what tells relays apart. UDP "
            "drops: datagrams the kernel dropped at a full socket receive buffer during the "
            "run (/proc/net/udp), at the client's qemu, the server's qemu and the relay."), "",
           "| goal | ratio | | |", "|---|---|---|---|"]
    for mode, base, goal in IPERF_GOALS:
        v = vs(mode, base)
        cell = "n/a" if v is None else f"{v:.2f}x"
        verdict = "n/a" if v is None else "met" if v >= goal else "NOT met"
        out.append(f"| {mode} vs {base} | {cell} | >= {goal:g}x | {verdict} |")
    for mode, base in IPERF_REFERENCES:
        v = vs(mode, base)
        if v is not None:
            out.append(f"| {mode} vs {base} | {v:.2f}x | (reference: the C relay's hop) | |")
    out += ["", "| mode | Gbit/s (best) | every round | vs direct UDP | vs direct TCP | "
                "retransmits | UDP drops client/server/relay | relay CPU-s per GB |",
            "|---|---|---|---|---|---|---|---|"]
    for mode in dict.fromkeys(x["mode"] for x in runs):
        row = best.get(mode)
        if row is None:
            err = next(x["error"] for x in runs if x["mode"] == mode)
            out.append(f"| {mode} | failed: {err} | | | | | | |")
            continue
        r = row
        drops = r.get("udp_drops")
        drop_cell = ("-" if not drops else
                     "/".join(str(drops[k]) if k in drops else "-"
                              for k in ("client", "server", "relay")))
        ratios = [vs(mode, base) for base in ("direct-udp", "direct-tcp")]
        out.append(f"| {mode} | {r['gbit_per_s']:.3f} | {', '.join(each[mode])} | "
                   + " | ".join("n/a" if x is None else fmt_ratio(x) for x in ratios)
                   + f" | {r['retransmits']} | {drop_cell} | {r.get('relay_cpu_s_per_gb', '-')} |")
    out.append("")
    return out


def run_quiet(bench_args: list[str]) -> int:
    """Run `python -m bench ARGS` in-process, its table suppressed (we print our own)."""
    return run_captured(bench_args)[0]


def run_captured(bench_args: list[str]) -> tuple[int, str]:
    """Run `python -m bench ARGS` in-process; return its status and what it printed."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = bench_main.main(bench_args)
    return status, buf.getvalue().strip()


TAP_SCENARIOS = "tapcopy-tap-p2p,fastrelay-tap-p2p,fastrelay-tap-tcp-*"
TAP_NOTES = """- `tapcopy-tap-p2p` is the baseline: `bench/src/tapcopy.c copy`, one blocking `read()` and
  one `write()` per frame between the same two taps (IFF_TAP|IFF_NO_PI); `fastrelay-tap-p2p`
  is `fastrelay tap:t0 tap:t1` (vnet-header taps, as qemu sets them up for vhost-net). A
  packet socket pushes 1500-byte frames out of t0 as fast as it can; t1's rx counter counts
  what the relay wrote. Frame points alternate rounds and keep each one's best.
- `fastrelay-tap-tcp-offload` / `-plain`: one iperf3 TCP stream between two test hosts
  (netns with a veth into brA and brB) through `fastrelay brA brB`, with tap offloads on
  (GSO super-frames pass tap to tap unchanged) and with `offload=off`.
- Everything runs in throwaway network namespaces made and removed by `bench/tap.py`.

### Design choice: offloads only where every peer is a tap (measured)

With offloads on, the kernel hands a tap's reader 64 KiB TCP super-frames with a
virtio_net_hdr, and the other tap takes them back unchanged: one read and one write move
~44 MTU-sized segments (compare the two TCP rows above). A plain peer (qemu
socket/stream/dgram, netrelay, a UDP or TCP link to another relay) cannot take a
super-frame, so fastrelay turns offloads on only point to point between two tap or bridge
targets; in a hub, or next to any socket target, taps run with offloads off and the
kernel's segmentation (in C, in the sender's context) serves the plain peers, which is
cheaper than segmenting again in the data plane one frame at a time. As a guard, a tap
port that still meets a plain port with offloads on fills partial checksums itself and
drops (and counts, `drop_gso`) super-frames: a plain peer never sees a vnet header, a
super-frame or a partial checksum. `offload=off` on a target forces the plain mode."""


TLS_NOTES = """Two relays point to point, `loadgen -> relay A -> link -> relay B -> sink`, on
loopback, each point the best of two interleaved rounds of 2 s: `plain` is the TCP link,
`tls` the same link with `,tls` on both ends (mutual TLS 1.3, OpenSSL called from the data
plane), `stunnel` the plain link carried through a pair of stunnel4 tunnels (mutual TLS as
well). CPU is that of both relays (and both stunnels) per GB of frames delivered. Goals:
`tls` at least 0.4x `plain` at 1500 B, and faster than `stunnel`. (`python -m bench.tls`.)"""


def merge_latency(rows: list[dict[str, Any]], latency_rows: list[dict[str, Any]]) -> None:
    """Put the unpinned ping-pong p50/p99 into the throughput rows of the same point: of
    its LATENCY_ROUNDS rounds, the one with the lowest p50 (a shared machine only ever
    adds to a round trip)."""
    lat: dict[tuple[str, int], dict[str, Any]] = {}
    for r in latency_rows:
        if r.get("skipped") or r.get("p50_us") is None:
            continue
        key = (r["scenario"], r["size"])
        if key not in lat or r["p50_us"] < lat[key]["p50_us"]:
            lat[key] = r
    for r in rows:
        other = lat.get((r["scenario"], r["size"]))
        r["p50_us"] = other.get("p50_us") if other else None
        r["p99_us"] = other.get("p99_us") if other else None


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of every point, with ratios recomputed after the latency merge."""
    from .report import markdown_table
    from .runner import Row

    objs = [Row(**r) for r in rows]
    baselines = bench_main.add_ratios(objs)
    return markdown_table(objs, baselines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="sending time per point (default 1)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--no-qemu", action="store_true", help="skip the guest iperf3 runs")
    ap.add_argument("--no-taps", action="store_true",
                    help="skip the tap scenarios (they need root and /dev/net/tun)")
    ap.add_argument("--no-tls", action="store_true",
                    help="skip the TLS links (fastrelay's TLS, plain, stunnel4; bench/tls.py)")
    ap.add_argument("--no-overlay", action="store_true",
                    help="skip the VXLAN-against-UDP link rounds (issue 15)")
    ap.add_argument("--no-perframe", action="store_true",
                    help="skip the one-datagram-per-frame comparison with netrelay (issue 14)")
    ap.add_argument("--no-switch", action="store_true",
                    help="skip the switch-mode scenarios (hub against switch)")
    ap.add_argument("--iperf-seconds", type=int, default=10)
    ap.add_argument("--iperf-rounds", type=int, default=IPERF_ROUNDS)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="a markdown file to append (e.g. tap results)")
    args = ap.parse_args(argv)
    command = "python -m bench.results " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="fastrelay-results-") as tmp:
        matrix_json = Path(tmp) / "matrix.json"
        scen = ",".join(SCENARIOS)
        latency_json = Path(tmp) / "latency.json"
        status = run_quiet(["--scenarios", scen, "--sizes", args.sizes,
                            "--seconds", f"{args.seconds:g}", "--pin", "--no-latency",
                            "--json", str(matrix_json)])
        latency_rows = []
        for rnd in range(LATENCY_ROUNDS):
            # The scenarios in reverse order every other round, so that no one of them
            # always runs at the same moment of whatever else the machine does.
            order = LATENCY_SCENARIOS if rnd % 2 == 0 else LATENCY_SCENARIOS[::-1]
            status |= run_quiet(["--scenarios", ",".join(order), "--sizes", "64,1500",
                                 "--seconds", "0.2", "--latency-seconds", "3",
                                 "--json", str(latency_json)])
            latency_rows += json.loads(latency_json.read_text())["rows"]
        switch_md = None
        if not args.no_switch:
            switch_status, switch_rows = switching.run_rounds(run_quiet, args.seconds)
            status |= switch_status
            switch_md = switching.section(switch_rows, args.seconds)
            print(switch_md)
        taps_md = None
        if not args.no_taps:
            tap_status, taps_md = run_captured(["--scenarios", TAP_SCENARIOS, "--sizes", "1500",
                                                "--seconds", "2", "--tap-rounds", "3", "--pin",
                                                "--markdown"])
            status |= tap_status
        overlay_best = None
        overlay_md = None
        if not args.no_overlay:
            from . import overlay as overlay_bench

            ov_status, overlay_best = overlay_bench.run_rounds(run_quiet, args.seconds)
            status |= ov_status
            overlay_md = overlay_bench.section(overlay_best, args.seconds)
            print(overlay_md)
        perframe_md = None
        if not args.no_perframe:
            from . import perframe

            pf_status, pf_best = perframe.run_rounds(run_quiet, 2.0)
            status |= pf_status
            perframe_md = perframe.section(pf_best, 2.0)
            print(perframe_md)
        tls_md = None
        if not args.no_tls:
            from . import tls as tls_bench

            tls_rows = tls_bench.run(max(args.seconds, 2.0), [1500, 64], rounds=2)
            status |= int(any(r.error for r in tls_rows))
            tls_md = tls_bench.results_section(tls_rows)
        rows = [r for r in json.loads(matrix_json.read_text())["rows"] if not r.get("skipped")]
        merge_latency(rows, latency_rows)
        table_md = table(rows)
        print(table_md)
        iperf = None
        if not args.no_qemu:
            iperf_json = Path(tmp) / "iperf.json"
            sys.path.insert(0, str(ROOT))
            from tests.qemu import iperf_run

            iperf_run.main(["--time", str(args.iperf_seconds), "--rounds",
                            str(args.iperf_rounds), "--json", str(iperf_json)])
            iperf = json.loads(iperf_json.read_text()) if iperf_json.exists() else []
    made = charts(rows, args.out.parent / "charts")
    extra = "\n\n".join(p.read_text() for p in args.extra)
    if taps_md:
        extra = ("## Taps and bridges (issue 3)\n\nThe relay pinned to core 1; 2 s points.\n\n"
                 + taps_md + "\n\n" + TAP_NOTES + ("\n\n" + extra if extra else ""))
    if perframe_md:
        extra = perframe_md + ("\n\n" + extra if extra else "")
    if overlay_md:
        extra = overlay_md + ("\n\n" + extra if extra else "")
    if tls_md:
        extra = ("## TLS links between two relays (issue 11)\n\n" + TLS_NOTES + "\n\n"
                 + tls_md + ("\n\n" + extra if extra else ""))
    args.out.write_text(render(machine(), command, rows, table_md, iperf, made, extra,
                               switch_md, overlay_best) + "\n")
    print(f"wrote {args.out} and {len(made)} charts", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

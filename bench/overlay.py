"""VXLAN link between two switches against the plain UDP link (issue 15), in alternating rounds.

Both links carry the same bulk UDP sender (flat out, GSO batches) through two fastrelay
switches, relay pinned to core 1: `fastrelay-udp-link` joins them with a plain UDP trunk,
`fastrelay-vxlan-link` with `vxlan:` endpoints. A flat-out sender overloads both, so each
point's frames/s is what the pair of relays can carry, and it swings by a third from one
second to the next on a shared machine: the two links run in `--rounds` rounds, the order
turning each round, and each point keeps its best round. Goal: VXLAN >= 0.9x the UDP
link's frames/s at 1500 B.

`python -m bench.results` runs it with everything else; `python -m bench.overlay` runs only
this part and prints its section.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import sections

LINKS = ["fastrelay-udp-link", "fastrelay-vxlan-link"]
SIZES = "64,1500"
ROUNDS = 8
GOAL = 0.9


def run_rounds(run: Callable[[list[str]], int], seconds: float,
               rounds: int = ROUNDS) -> tuple[int, dict[tuple[str, int], dict[str, Any]]]:
    """Run both links `rounds` times through @run (bench's main); the best row of each point."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fastrelay-overlay-") as tmp:
        for rnd in range(rounds):
            for k, link in enumerate(LINKS if rnd % 2 == 0 else LINKS[::-1]):
                out = Path(tmp) / f"round{rnd}-{k}.json"
                run(["--scenarios", link, "--sizes", SIZES, "--seconds", f"{seconds:g}",
                     "--pin", "--no-latency", "--json", str(out)])
                for row in json.loads(out.read_text())["rows"]:
                    if row.get("skipped"):
                        continue
                    key = (row["scenario"], row["size"])
                    old = best.get(key)
                    if (old is None or (old.get("error") and not row.get("error"))
                            or (not row.get("error")
                                and (row.get("fps_total") or 0) > (old.get("fps_total") or 0))):
                        best[key] = row
    return int(any(r.get("error") for r in best.values())), best


def ratio(best: dict[tuple[str, int], dict[str, Any]], size: int) -> float | None:
    """VXLAN frames/s over the UDP link's at @size, or None if either failed."""
    v = best.get(("fastrelay-vxlan-link", size), {}).get("fps_total")
    u = best.get(("fastrelay-udp-link", size), {}).get("fps_total")
    return v / u if v and u else None


def section(best: dict[tuple[str, int], dict[str, Any]], seconds: float, rounds: int = ROUNDS,
            origin: str | None = None) -> str:
    sizes = sorted({size for _, size in best})
    out = ["## VXLAN link between two switches (issue 15)", ""]
    if origin:
        out += [origin, ""]
    out += [("`loadgen` (bulk, flat out) -> fastrelay switch A -> link -> fastrelay switch B "
             "-> sink; both relays pinned to core 1, the tools on core 0. The link is a plain "
             "UDP trunk or a VXLAN endpoint at each side (VNI 42). "
             f"{rounds} rounds of {seconds:g} s, the order turning each round; each point "
             "keeps its best round."), "",
            "| size | VXLAN / UDP link frames/s | goal | |", "|---|---|---|---|"]
    for size in sizes:
        r = ratio(best, size)
        goal = f">= {GOAL:g}x" if size == 1500 else "(reference)"
        verdict = ("n/a" if r is None else "" if size != 1500
                   else "met" if r >= GOAL else "NOT met")
        out.append(f"| {size} | {'n/a' if r is None else f'{r:.2f}x'} | {goal} | {verdict} |")
    out += ["", "| link | size | frames/s delivered | loss % | CPU ns/frame (both relays) |",
            "|---|---:|---:|---:|---:|"]
    for link in LINKS:
        for size in sizes:
            row = best.get((link, size))
            if row is None:
                continue
            if row.get("error"):
                out.append(f"| {link} | {size} | failed: {row['error']} | | |")
                continue
            out.append(f"| {link} | {size} | {row.get('fps_total') or 0:,.0f} | "
                       f"{row.get('loss_pct') or 0:.1f} | {row.get('relay_ns_per_frame') or 0:,.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run this part alone and print its RESULTS.md section; 1 if a point failed."""
    return sections.standalone("overlay", __doc__, "--no-overlay", 1.0, ROUNDS, run_rounds, section,
                               argv)


if __name__ == "__main__":
    sys.exit(main())

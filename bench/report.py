"""Formats benchmark rows as an aligned text table, a markdown table or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

from .runner import Row


def _si(v: float | None) -> str:
    """1234567 -> '1.23M': frame rates span five orders of magnitude."""
    if v is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _num(fmt: str) -> Callable[[float | None], str]:
    """A formatter that prints '-' for a missing value."""
    return lambda v: "-" if v is None else format(v, fmt)


def columns(baselines: list[str]) -> list[tuple[str, Callable[[Row], str]]]:
    """Header and cell function of every column; ratio columns only for baselines in the run."""
    cols: list[tuple[str, Callable[[Row], str]]] = [
        ("scenario", lambda r: r.scenario),
        ("size", lambda r: str(r.size)),
        ("sinks", lambda r: str(r.nsinks)),
        ("frames/s/sink", lambda r: _si(r.fps_per_sink)),
        ("frames/s total", lambda r: _si(r.fps_total)),
        ("Gbit/s/sink", lambda r: _num(".3g")(r.gbit_per_sink)),
        ("loss %", lambda r: _num(".2f")(r.loss_pct)),
        ("relay ns/frame", lambda r: _num(".0f")(r.relay_ns_per_frame)),
        ("relay CPU %", lambda r: _num(".0f")(r.relay_cpu_pct)),
        ("p50 us", lambda r: _num(".1f")(r.p50_us)),
        ("p99 us", lambda r: _num(".1f")(r.p99_us)),
    ]
    for b in baselines:
        cols.append((f"x {b}", _ratio_cell(f"fps_x_{b}")))
        if b != "direct":
            cols.append((f"cpu x {b}", _ratio_cell(f"cpu_x_{b}")))
    cols.append(("note", _note))
    return cols


def _ratio_cell(key: str) -> Callable[[Row], str]:
    """A cell function showing ratio @key of a row."""
    return lambda r: _ratio(r.ratios.get(key))


def _ratio(v: float | None) -> str:
    """A ratio as '2.31x'."""
    return "-" if v is None else f"{v:.3g}x"


def _note(r: Row) -> str:
    """Why a row is empty or suspicious, shortened to fit a table cell."""
    if r.skipped:
        return f"skipped: {r.skipped}"
    if r.error:
        return "ERROR: " + " ".join(r.error.split())[:160]
    notes = []
    if r.out_of_order:
        notes.append(f"{r.out_of_order} out of order")
    if r.ping_lost:
        notes.append(f"{r.ping_lost} pings lost")
    if r.foreign:
        notes.append(f"{_si(r.foreign)} frames read by ends they were not for")
    return ", ".join(notes)


def text_table(rows: list[Row], baselines: list[str]) -> str:
    """Aligned plain-text table, numbers right-aligned."""
    cols = columns(baselines)
    cells = [[h for h, _ in cols]] + [[f(r) for _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = []
    for n, line in enumerate(cells):
        parts = [c.ljust(w) if i in (0, len(cols) - 1) or n == 0 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row], baselines: list[str]) -> str:
    """GitHub markdown table (for bench/RESULTS.md)."""
    cols = columns(baselines)
    out = ["| " + " | ".join(h for h, _ in cols) + " |",
           "|" + "|".join("---" if i == 0 or h == "note" else "---:"
                          for i, (h, _) in enumerate(cols)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(f(r).replace("|", "/") for _, f in cols) + " |")
    return "\n".join(out)


def to_json(rows: list[Row], meta: dict[str, object]) -> str:
    """Everything measured, for later comparison: run settings plus one object per row."""
    return json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1)

"""Counters for people: the `fastrelay stats` table, its --watch loop, and -v's per-port lines.

Rates need two samples. `fastrelay stats` asks the daemon twice, SAMPLE_INTERVAL apart,
and divides the counters' growth by the growth of the daemon's own uptime (so a slow
answer does not skew them); `--watch` draws each new sample against the one before. A
counter that went down (a link whose definition changed starts again from zero) has no
rate: the cell shows `-`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from .errors import RelayError
from .stats import _size

__all__ = ["PORT_LINES", "SAMPLE_INTERVAL", "WATCH_INTERVAL", "add_arguments", "compact_number",
           "misplaced_options", "port_lines", "render_table", "run_stats"]

SAMPLE_INTERVAL = 1.0   # seconds between the two samples of a one-shot table
WATCH_INTERVAL = 2.0    # --watch without SECONDS, as watch(1)
PORT_LINES = 8          # -v: per-port lines shown; the busiest and the lossiest first

# (header, field) of the counter columns; rates are computed for the first four fields.
_RATES = (("IN/S", "rx_frames"), ("IN B/S", "rx_bytes"), ("OUT/S", "tx_frames"),
          ("OUT B/S", "tx_bytes"))
_TOTALS = (("IN", "rx_frames"), ("IN B", "rx_bytes"), ("OUT", "tx_frames"),
           ("OUT B", "tx_bytes"))
_DROPS = (("FULL", "drop_queue"), ("INVAL", "drop_invalid"), ("SEND", "drop_send"))
_DROP_FIELDS = tuple(f for _, f in _DROPS)
HEADER = ("LINK", "ENDPOINT", "STATE", "PEERS", *(h for h, _ in _RATES), "DROP/S",
          *(h for h, _ in _TOTALS), *(h for h, _ in _DROPS), "QUEUED")
_LEFT = 3   # LINK, ENDPOINT, STATE are text: left-aligned; the rest are numbers
CLEAR = "\x1b[H\x1b[2J"   # cursor home, clear screen: how top and watch redraw


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: the interval must be within 0.1..3600 s")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a count of redraws (1 or more): {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fastrelay stats` beyond --control and --prometheus."""
    parser.add_argument("--json", action="store_true",
                        help="with `stats`: the daemon's JSON document instead of the table")
    parser.add_argument("--watch", type=_seconds, nargs="?", const=WATCH_INTERVAL,
                        metavar="SECONDS",
                        help="with `stats`: redraw every SECONDS (default "
                             f"{WATCH_INTERVAL:g}) until interrupted, as top does")
    parser.add_argument("--count", type=_count, metavar="N",
                        help="with `stats --watch`: stop after N redraws")


def misplaced_options(args: argparse.Namespace) -> list[str]:
    """The options given that only `fastrelay stats` takes (for the usage error)."""
    given = [("--control", args.control is not None), ("--prometheus", args.prometheus),
             ("--json", args.json), ("--watch", args.watch is not None),
             ("--count", args.count is not None)]
    return [name for name, present in given if present]


# -- numbers --------------------------------------------------------------------------------

def compact_number(value: float | None) -> str:
    """A count in at most 5 characters: 999, 1.23k, 45.6M; '-' when unknown."""
    if value is None:
        return "-"
    if value < 999.5:
        return f"{value:.0f}"
    for unit in ("k", "M", "G", "T", "P"):
        value /= 1000
        if value < 9.995:
            return f"{value:.2f}{unit}"
        if value < 99.95:
            return f"{value:.1f}{unit}"
        if value < 999.5 or unit == "P":
            return f"{value:.0f}{unit}"
    raise AssertionError("unreachable: P has no upper bound")


def _rate(now: Mapping[str, Any], before: Mapping[str, Any] | None, fields: Iterable[str],
          interval: float) -> float | None:
    """Growth per second of the sum of fields; None without an earlier sample or on reset."""
    if before is None or interval <= 0:
        return None
    grew = sum(int(now.get(f, 0)) - int(before.get(f, 0)) for f in fields)
    return grew / interval if grew >= 0 else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours}:{minutes:02}:{secs:02}"
    return f"{days}d {text}" if days else text


# -- the table -------------------------------------------------------------------------------

def _counter_cells(now: Mapping[str, Any], before: Mapping[str, Any] | None,
                   interval: float) -> list[str]:
    """The number cells of one row, from IN/S to QUEUED."""
    return [*(compact_number(_rate(now, before, (f,), interval)) for _, f in _RATES),
            compact_number(_rate(now, before, _DROP_FIELDS, interval)),
            *(compact_number(now.get(f, 0)) for _, f in _TOTALS),
            *(compact_number(now.get(f, 0)) for _, f in _DROPS),
            compact_number(now.get("queued_bytes", 0))]


def _rows(doc: Mapping[str, Any], before: Mapping[str, Any] | None, interval: float,
          verbose: bool) -> tuple[list[list[str]], list[str]]:
    """Table rows (one per link and endpoint, and per port when verbose), and notes."""
    earlier: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for link in (before or {}).get("links", []):
        for ep in link["endpoints"]:
            earlier[(link["name"], ep["endpoint"])] = ep
            for port in ep.get("ports", []):
                earlier[(link["name"], ep["endpoint"], port["name"])] = port
    rows, notes = [], []
    for link in doc.get("links", []):
        name = link["name"] if link["kind"] == "link" else f"{link['name']} (hub)"
        if link.get("error") and link["state"] != "up":
            notes.append(f"{link['kind']} {link['name']}: {link['state']}: {link['error']}")
        if not link["endpoints"]:
            rows.append([name, "-", link["state"], "0", *["-"] * (len(HEADER) - 4)])
        for ep in link["endpoints"]:
            key = (link["name"], ep["endpoint"])
            rows.append([name, ep["endpoint"], link["state"], str(ep.get("connected", 0)),
                         *_counter_cells(ep, earlier.get(key) if before else None,
                                         interval)])
            if not verbose:
                continue
            for port in ep.get("ports", []):
                old = earlier.get((*key, port["name"])) if before else None
                rows.append(["", " \\_ " + port["name"], "", "",
                             *_counter_cells(port, old, interval)])
    return rows, notes


def render_table(doc: Mapping[str, Any], before: Mapping[str, Any] | None = None, *,
                 verbose: bool = False, now: float | None = None) -> str:
    """The text of `fastrelay stats`: a title line, the table, then one line per failure.

    doc and before are stats documents (metrics.stats_document); the rates are the growth
    from before to doc over the growth of the daemon's uptime.
    """
    interval = float(doc.get("uptime", 0)) - float(before.get("uptime", 0)) if before else 0.0
    rows, notes = _rows(doc, before, interval, verbose)
    when = time.strftime("%H:%M:%S", time.localtime(now))
    over = f"rates over {interval:.1f} s" if before else "no rates (one sample)"
    links = doc.get("links", [])
    title = (f"fastrelay {doc.get('version', '?')} at {when}, up "
             f"{_duration(float(doc.get('uptime', 0)))}, {len(links)} links and hubs, {over}")
    table = [list(HEADER), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = [title]
    for row in table:
        cells = [cell.ljust(w) if i < _LEFT else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    if not links:
        lines.append("(no links or hubs configured)")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# -- -v of a running relay -------------------------------------------------------------------

def port_lines(ports: Sequence[tuple[str, Mapping[str, int]]],
               before: Mapping[str, Mapping[str, int]] | None, interval: float,
               limit: int = PORT_LINES) -> list[str]:
    """-v: one line per port with its rates and drops, the lossiest and busiest first.

    ports are (name, counters) now, before the counters by name one interval ago. Past
    limit, one line counts the ports left out, so a hub of hundreds stays readable.
    """
    scored = []
    for name, now in ports:
        old = before.get(name) if before is not None else None
        if old is None and before is not None:
            old = dict.fromkeys(now, 0)  # a port that joined since: everything is new
        drops = _rate(now, old, _DROP_FIELDS, interval) or 0.0
        traffic = _rate(now, old, ("rx_bytes", "tx_bytes"), interval) or 0.0
        # The first report has no rates: rank by the totals so far instead.
        rank = ((drops, traffic) if old is not None else
                (sum(now.get(f, 0) for f in _DROP_FIELDS),
                 now.get("rx_bytes", 0) + now.get("tx_bytes", 0)))
        scored.append((rank, drops, name, now, old))
    scored.sort(key=lambda item: (-item[0][0], -item[0][1], item[2]))
    lines = []
    for _, drops, name, now, old in scored[:limit]:
        def rate(field: str, counters: Mapping[str, int] = now,
                 earlier: Mapping[str, int] | None = old) -> float:
            return _rate(counters, earlier, (field,), interval) or 0.0
        total_drops = sum(int(now.get(f, 0)) for f in _DROP_FIELDS)
        lines.append(
            f"  {name}: in {rate('rx_frames'):.0f} fr/s {_size(rate('rx_bytes'))}/s | "
            f"out {rate('tx_frames'):.0f} fr/s {_size(rate('tx_bytes'))}/s | "
            f"dropped {drops:.0f}/s (total {total_drops}: queue full "
            f"{now.get('drop_queue', 0)}, invalid {now.get('drop_invalid', 0)}, send "
            f"{now.get('drop_send', 0)}) | queued {_size(now.get('queued_bytes', 0))}")
    if len(scored) > limit:
        lines.append(f"  ... and {len(scored) - limit} more ports, quieter")
    return lines


# -- `fastrelay stats` -----------------------------------------------------------------------

def _document(query: Callable[[str], str]) -> dict[str, Any]:
    answer = query("stats")
    try:
        doc = json.loads(answer)
    except ValueError:
        raise RelayError(f"the daemon's answer is not JSON: {answer[:60]!r}") from None
    if not isinstance(doc, dict) or "links" not in doc:
        raise RelayError(f"the daemon's answer has no links: {answer[:60]!r}")
    return doc


def run_stats(query: Callable[[str], str], *, raw: str | None = None,
              watch: float | None = None, count: int | None = None, verbose: bool = False,
              out: TextIO = sys.stdout) -> int:
    """Print the daemon's counters: a table, or raw ("stats" JSON or "metrics" text).

    query(command) returns the control socket's answer. Without watch: one table from
    two samples SAMPLE_INTERVAL apart (or the raw answer once). With watch: redraw every
    watch seconds, count times or until interrupted (then exit 0, as top does).
    """
    redraw = watch is not None and out.isatty()
    shown = 0
    before = None if raw is not None or watch is not None else _document(query)
    try:
        while True:
            if before is not None or (watch is not None and shown > 0):
                time.sleep(watch if watch is not None else SAMPLE_INTERVAL)
            if raw is not None:
                text = query(raw)
            else:
                doc = _document(query)
                text = render_table(doc, before, verbose=verbose)
                before = doc
            if redraw:
                text = CLEAR + text
            elif shown:
                text = "\n" + text  # successive tables in a pipe or a file: one blank line
            out.write(text)
            out.flush()
            shown += 1
            if watch is None or (count is not None and shown >= count):
                return 0
    except KeyboardInterrupt:
        if watch is None:
            raise
        return 0

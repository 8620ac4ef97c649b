"""One way to run a part of RESULTS.md on its own: bench.switching, bench.perframe, bench.overlay.

Each part has run_rounds(run, seconds, rounds) -> (status, rows) and section(rows, seconds,
rounds, origin) -> markdown; `python -m bench.PART` runs it through standalone() and prints
the section, stamped with its command, date and revision.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def quiet(bench_args: list[str]) -> int:
    """`python -m bench ARGS` in this process, its table not printed."""
    from . import __main__ as bench_main

    with contextlib.redirect_stdout(io.StringIO()):
        return bench_main.main(bench_args)


def standalone(part: str, doc: str, skip_flag: str, seconds: float, rounds: int,
               run_rounds: Callable[..., tuple[int, Any]],
               section: Callable[..., str], argv: list[str] | None) -> int:
    """`python -m bench.PART [--seconds S] [--rounds N]`: run the part, print its section.

    @skip_flag: the bench.results option that leaves the part out (said in the stamp).
    Returns 1 if a point failed.
    """
    ap = argparse.ArgumentParser(prog=f"python -m bench.{part}", description=doc.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=seconds,
                    help=f"sending time per point (default {seconds:g})")
    ap.add_argument("--rounds", type=int, default=rounds, help=f"rounds (default {rounds})")
    args = ap.parse_args(argv)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False).stdout.strip()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([f"python -m bench.{part}",
                        *(argv if argv is not None else sys.argv[1:])])
    status, rows = run_rounds(quiet, args.seconds, args.rounds)
    origin = (f"Command: `{command}` (also run by `python -m bench.results` unless "
              f"`{skip_flag}`), {when}, fastrelay {rev or 'unknown'}.")
    print(section(rows, args.seconds, args.rounds, origin))
    return status

"""Regression gate: the benchmark suite against a baseline build and this tree's, interleaved.

`python -m bench.check [--baseline REV] [--margin PCT] [--rounds N] [--short]`

Builds the baseline revision and the current working tree (uncommitted edits included)
each into a temporary venv, then runs this tree's pytest-benchmark suite (`bench/`,
`--benchmark-only`) against the two builds in turn, baseline first, for N rounds: A, B,
A, B. Every run's pytest-benchmark JSON is kept. A case fails when the current build's
best time over all rounds is worse than the baseline's best by more than the margin;
a case over the margin after N rounds first gets 2N more rounds of its own. Both sides
run on this machine in the same minutes, so no timing saved elsewhere is ever the
reference. Exit status: 0 passed (or nothing to compare with), 1 a case regressed or
the suite failed on the current build, 2 the gate could not run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where "main" is: the remote's in a clone (CI, a fresh clone), else the local branch.
MAIN_REFS = ["origin/main", "main"]
MARGIN = 25.0           # percent
ROUNDS = 3
SHORT_ROUNDS = 2
CONFIRM_FACTOR = 2      # a case over the margin gets this many times --rounds more rounds
SHORT_MAX_TIME = 0.1    # --benchmark-max-time of auto-calibrated cases under --short
BUILD_TIMEOUT = 900     # seconds per build
RUN_TIMEOUT = 900       # seconds per suite run


class GateError(RuntimeError):
    """The gate could not run; the message says which step failed and why."""


class BuildFailed(GateError):
    """A revision did not build; the message ends with the tail of the build log."""


@dataclass
class Side:
    """One build under comparison and everything the gate keeps about it."""

    name: str              # "baseline" or "current"
    label: str             # what was built: a commit, or "working tree at <commit>"
    src: Path = Path()
    venv: Path = Path()
    # case (file::test[param]) -> best time of each round it ran in, in seconds
    best: dict[str, list[float]] = field(default_factory=dict)
    failed_runs: list[Path] = field(default_factory=list)   # logs of pytest runs that failed

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


# -- which revision is the baseline ------------------------------------------------------


def git(*args: str, check: bool = True) -> str:
    res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                         check=False)
    if check and res.returncode != 0:
        raise GateError(f"git {' '.join(args)} failed in {ROOT}: {res.stderr.strip()}")
    return res.stdout.strip() if res.returncode == 0 else ""


def commit_of(rev: str) -> str | None:
    """The commit rev names, or None when it names none (no such ref, no parent)."""
    return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False) or None


def default_baseline() -> tuple[str | None, str]:
    """The last commit of main before the current change, and why (see bench/README.md).

    The change is, in this order: the commits of HEAD that main lacks; else the
    uncommitted edits to tracked files; else HEAD's own commit (CI tests main's tip).
    """
    head = commit_of("HEAD")
    if head is None:
        return None, "the repository has no commit"
    for ref in MAIN_REFS:
        if commit_of(ref) is None:
            continue
        fork = git("merge-base", "HEAD", ref, check=False)
        if fork and fork != head:
            return fork, f"where HEAD left {ref} (git merge-base HEAD {ref})"
        break
    if git("status", "--porcelain", "--untracked-files=no"):
        return head, "HEAD: the working tree has uncommitted changes"
    parent = commit_of("HEAD^1")
    if parent is None:
        return None, "HEAD has no parent commit (first commit, or a shallow clone)"
    return parent, "HEAD^1: the commit before HEAD's own change"


# -- exporting and building --------------------------------------------------------------


def export_commit(sha: str, dest: Path) -> None:
    """The files of commit sha, as `git archive` gives them, into dest."""
    tar = dest.with_suffix(".tar")
    git("archive", "--format=tar", "-o", str(tar), sha)
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")
    tar.unlink()


def export_worktree(dest: Path) -> None:
    """The working tree as it is: tracked files (edits included) and untracked, unignored
    ones; deleted files stay deleted, ignored build products stay behind."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if not src.exists() and not src.is_symlink():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)


def child_env() -> dict[str, str]:
    """The environment of builds and suite runs: nothing that would pick another fastrelay
    (PYTHONPATH) or another build type (FASTRELAY_DEBUG)."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "FASTRELAY_DEBUG", "PIP_USER"):
        env.pop(name, None)
    return env


def make_venv(venv: Path) -> str:
    """A venv whose only fastrelay will be the one installed into it; everything else
    (uvloop, pytest, pytest-benchmark, ...) is seen from this interpreter's site
    directories. Returns the venv's site-packages.

    The site directories go in as plain path entries, after the venv's own: their .pth
    files (an editable fastrelay among them) are not run, so nothing there can shadow
    the build under test. This also works when the gate itself runs inside a venv.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60, env=child_env()).stdout.strip()
    dirs = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    Path(purelib, "bench-check-deps.pth").write_text("".join(f"{d}\n" for d in dirs))
    return purelib


def build(side: Side, log: Path) -> float:
    """Install side.src into side.venv with pip (a release build, as `pip install .` makes
    it); the seconds it took. BuildFailed with the log's tail if it does not build."""
    t0 = time.monotonic()
    purelib = make_venv(side.venv)
    # --target: pip installs into the venv and never looks at (or uninstalls) the
    # fastrelay it may see through the site directories.
    cmd = [str(side.python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
           "--no-warn-script-location", "--target", purelib, str(side.src)]
    with open(log, "w") as out:
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=child_env(), cwd=side.venv,
                                 timeout=BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"{side.label}: build took over {BUILD_TIMEOUT} s (log: {log})")
    if res.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise BuildFailed(f"{side.label}: pip install failed (log: {log}):\n" + "\n".join(tail))
    # The build under test must be the one imported, from a directory with no source tree.
    probe = subprocess.run([str(side.python), "-c",
                            "import fastrelay._core as c; print(c.__file__)"],
                           capture_output=True, text=True, env=child_env(), cwd=side.venv,
                           timeout=60, check=False)
    core = probe.stdout.strip()
    if probe.returncode != 0 or not core.startswith(str(side.venv)):
        raise GateError(f"{side.label}: the venv imports fastrelay._core from "
                        f"{core or probe.stderr.strip()!r}, not from {side.venv}")
    return time.monotonic() - t0


# -- running and comparing ---------------------------------------------------------------


def make_suite(current_src: Path, suite: Path) -> None:
    """This tree's suite (bench/ and the pytest settings), apart from any fastrelay source:
    pytest puts the suite's root on sys.path, where a fastrelay/ would shadow the build."""
    shutil.copytree(current_src / "bench", suite / "bench", symlinks=True)
    shutil.copy2(current_src / "pyproject.toml", suite / "pyproject.toml")


def run_suite(side: Side, suite: Path, json_path: Path, short: bool,
              cases: list[str] | None = None) -> tuple[int, float]:
    """One pytest-benchmark run of the suite (or of cases) against side's build;
    (pytest's exit status, seconds)."""
    targets = [f"bench/{case}" for case in cases] if cases else ["bench"]
    cmd = [str(side.python), "-m", "pytest", *targets, "--benchmark-only", "-q",
           "-p", "no:cacheprovider", f"--benchmark-json={json_path}"]
    if short:
        cmd += ["--bench-short", f"--benchmark-max-time={SHORT_MAX_TIME}"]
    t0 = time.monotonic()
    with open(json_path.with_suffix(".log"), "w") as out:
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=child_env(), cwd=suite,
                                 timeout=RUN_TIMEOUT, check=False)
            status = res.returncode
        except subprocess.TimeoutExpired:
            out.write(f"\nbench.check: killed after {RUN_TIMEOUT} s\n")
            status = -1
    if json_path.exists():
        for bench in json.loads(json_path.read_text())["benchmarks"]:
            case = bench["fullname"].removeprefix("bench/")
            side.best.setdefault(case, []).append(bench["stats"]["min"])
    if status != 0:
        side.failed_runs.append(json_path.with_suffix(".log"))
    return status, time.monotonic() - t0


def run_rounds(sides: tuple[Side, Side], suite: Path, json_dir: Path, rounds: range,
               short: bool, cases: list[str] | None = None) -> None:
    """A, B, A, B, ...: each round runs the suite once per side, baseline first."""
    for n in rounds:
        took = []
        for side in sides:
            status, secs = run_suite(side, suite, json_dir / f"{side.name}-{n}.json", short,
                                     cases)
            took.append(f"{side.name} {secs:.1f} s" + ("" if status == 0 else
                                                      f" (pytest exit {status})"))
        what = f" ({len(cases)} cases)" if cases else ""
        say(f"round {n}/{rounds.stop - 1}{what}: " + ", ".join(took))


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.1f} ns"


@dataclass
class Verdict:
    case: str
    base: float | None
    cur: float | None
    status: str            # ok, SLOWER, no baseline, not run

    @property
    def ratio(self) -> float | None:
        return self.cur / self.base if self.base and self.cur is not None else None


def compare(base: Side, cur: Side, margin: float) -> list[Verdict]:
    """One verdict per case: the best (min) of every round on each side, then their ratio."""
    out = []
    for case in sorted(set(base.best) | set(cur.best)):
        b = min(base.best[case]) if case in base.best else None
        c = min(cur.best[case]) if case in cur.best else None
        if c is None:
            status = "not run"
        elif b is None:
            status = "no baseline"
        elif c > b * (1 + margin / 100):
            status = "SLOWER"
        else:
            status = "ok"
        out.append(Verdict(case, b, c, status))
    return out


def table(verdicts: list[Verdict]) -> str:
    rows = [("case", "baseline best", "current best", "ratio", "")]
    for v in verdicts:
        rows.append((v.case, fmt_time(v.base) if v.base is not None else "-",
                     fmt_time(v.cur) if v.cur is not None else "-",
                     f"{v.ratio:.2f}" if v.ratio is not None else "-", v.status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  "
                     f"{r[3]:>{widths[3]}}  {r[4]}".rstrip() for r in rows)


# -- the command -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", metavar="REV",
                    help="revision to compare with (default: the last commit of main before "
                         "the current change; see bench/README.md)")
    ap.add_argument("--margin", type=float, default=MARGIN, metavar="PCT",
                    help=f"fail when a best time is more than PCT%% worse (default {MARGIN:g})")
    ap.add_argument("--rounds", type=int, default=None, metavar="N",
                    help=f"A/B rounds (default {ROUNDS}, {SHORT_ROUNDS} with --short)")
    ap.add_argument("--short", action="store_true",
                    help="seconds per case: fewer frames and rounds inside each case (CI)")
    ap.add_argument("--json-dir", type=Path, metavar="DIR",
                    help="where the runs' JSON and logs go (default .benchmarks/check/TIME)")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = SHORT_ROUNDS if args.short else ROUNDS
    if args.rounds < 1 or args.margin < 0:
        ap.error("--rounds must be at least 1 and --margin at least 0")
    return args


def say(msg: str) -> None:
    print(f"bench.check: {msg}", flush=True)


def gate(args: argparse.Namespace) -> int:
    if args.baseline:
        sha, why = commit_of(args.baseline), f"--baseline {args.baseline}"
        if sha is None:
            raise GateError(f"--baseline {args.baseline}: no such commit in {ROOT}")
    else:
        sha, why = default_baseline()
        if sha is None:
            say(f"no baseline to compare with: {why}; skipped")
            return 0
    head = git("rev-parse", "--short", "HEAD")
    dirty = " with uncommitted changes" if git("status", "--porcelain") else ""
    base = Side("baseline", git("log", "-1", "--format=%h %s", sha))
    cur = Side("current", f"working tree at {head}{dirty}")
    json_dir = args.json_dir or ROOT / ".benchmarks" / "check" / dt.datetime.now().strftime(
        "%Y%m%d-%H%M%S")
    json_dir.mkdir(parents=True, exist_ok=True)
    say(f"baseline {base.label} ({why})")
    say(f"current  {cur.label}")

    with tempfile.TemporaryDirectory(prefix="fastrelay-bench-check-") as tmp:
        work = Path(tmp)
        for side in (base, cur):
            side.src, side.venv = work / f"{side.name}-src", work / f"{side.name}-venv"
            side.src.mkdir()
        export_commit(sha, base.src)
        export_worktree(cur.src)
        # Both builds at once: each is one long single-threaded compile.
        with ThreadPoolExecutor(2) as pool:
            jobs = {s.name: pool.submit(build, s, json_dir / f"build-{s.name}.log")
                    for s in (base, cur)}
            try:
                base_secs = jobs["baseline"].result()
            except BuildFailed as exc:
                jobs["current"].result()  # the current tree must build all the same
                if args.baseline:
                    raise  # asked for by name: not a case to skip
                # The default baseline: a fix of a broken build must still pass the gate.
                say(f"the baseline does not build, nothing to compare with; skipped\n{exc}")
                return 0
            cur_secs = jobs["current"].result()
        say(f"built both in {max(base_secs, cur_secs):.0f} s")

        suite = work / "suite"
        make_suite(cur.src, suite)
        # The suite's C programs are compiled once, outside the timed rounds.
        subprocess.run([str(cur.python), "-c", "from bench.build import build; build()"],
                       cwd=suite, env=child_env(), check=True, timeout=300)
        rounds = args.rounds
        run_rounds((base, cur), suite, json_dir, range(1, rounds + 1), args.short)
        verdicts = compare(base, cur, args.margin)
        suspects = [v.case for v in verdicts if v.status == "SLOWER"]
        if suspects and not cur.failed_runs:
            # A slowdown of the code shows in every round; a busy moment of the machine
            # rarely in many. Rounds of the suspects alone are cheap: twice as many again.
            more = CONFIRM_FACTOR * rounds
            say(f"{len(suspects)} cases over the margin; {more} more rounds of those")
            run_rounds((base, cur), suite, json_dir, range(rounds + 1, rounds + more + 1),
                       args.short, suspects)
            rounds += more
            verdicts = compare(base, cur, args.margin)
    summary = {"baseline": {"commit": sha, "label": base.label, "why": why},
               "current": cur.label, "margin_pct": args.margin, "rounds": rounds,
               "short": args.short,
               "cases": [{"case": v.case, "baseline_min_s": v.base, "current_min_s": v.cur,
                          "ratio": v.ratio, "status": v.status} for v in verdicts]}
    (json_dir / "check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"best time of every round on each side; fail above {1 + args.margin / 100:.2f}x:")
    print(table(verdicts))
    say(f"JSON and logs in {json_dir}")
    for log in base.failed_runs:
        say(f"note: the suite failed on the baseline build (its cases not compared): {log}")
    slower = [v for v in verdicts if v.status == "SLOWER"]
    if cur.failed_runs:
        say(f"FAILED: the suite failed on the current build: {cur.failed_runs[0]}")
        return 1
    if slower:
        say(f"FAILED: {len(slower)} of {len(verdicts)} cases are more than {args.margin:g}% "
            f"slower than the baseline:")
        print(table(slower))
        return 1
    say(f"passed: no case is more than {args.margin:g}% slower than the baseline")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return gate(args)
    except GateError as exc:
        say(f"cannot run: {exc}")
    except subprocess.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        say(f"cannot run: {' '.join(map(str, exc.cmd))} exited {exc.returncode}"
            + (f": {err[-1]}" if err else ""))
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"cannot run: {exc}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

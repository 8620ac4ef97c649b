"""Compiles the bench C programs into bench/.build/, rebuilding only what is stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
BUILD = Path(__file__).resolve().parent / ".build"
CC = os.environ.get("CC", "gcc")
CFLAGS = ["-O2", "-Wall", "-Wextra", "-pthread", "-std=gnu11"]

# Program -> its own sources; COMMON goes into every program that names it.
COMMON = ["util.c", "frame.c", "stream.c", "endpoint.c"]
PROGRAMS: dict[str, list[str]] = {
    "loadgen": ["loadgen.c", *COMMON],
    "sink": ["sink.c", *COMMON],
    "pingpong": ["pingpong.c", *COMMON],
    "naive": ["naive.c", "util.c"],
    "tapcopy": ["tapcopy.c", "util.c"],
    "wakecost": ["wakecost.c", "util.c"],
}


class BuildError(RuntimeError):
    """A C program failed to compile; the message holds the compiler output."""


def _stale(exe: Path, sources: list[Path], stamp: str) -> bool:
    """True if @exe is missing, older than any source or header, or built with other flags."""
    if not exe.exists():
        return True
    flags_file = exe.with_suffix(".flags")
    if not flags_file.exists() or flags_file.read_text() != stamp:
        return True
    # Any header may be included by any source: a header change rebuilds all.
    newest = max(p.stat().st_mtime for p in [*sources, *SRC.glob("*.h")])
    return exe.stat().st_mtime < newest


def build(verbose: bool = False) -> dict[str, Path]:
    """Build every program if stale; return program name -> executable path."""
    if shutil.which(CC) is None:
        raise BuildError(f"C compiler {CC!r} not found")
    BUILD.mkdir(exist_ok=True)
    out: dict[str, Path] = {}
    for name, files in PROGRAMS.items():
        exe = BUILD / name
        sources = [SRC / f for f in files]
        tmp = f"{exe}.{os.getpid()}.tmp"   # per process: two runs may build at once
        cmd = [CC, *CFLAGS, "-o", tmp, *map(str, sources)]
        stamp = " ".join([CC, *CFLAGS])
        if _stale(exe, sources, stamp):
            if verbose:
                print(" ".join(cmd), file=sys.stderr)
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                 check=False)
            if res.returncode != 0:
                raise BuildError(f"building {name} failed:\n{res.stderr}")
            if res.stderr and verbose:
                print(res.stderr, file=sys.stderr, end="")
            # Rename into place so a concurrent run never sees half a binary.
            os.replace(tmp, exe)
            exe.with_suffix(".flags").write_text(stamp)
        out[name] = exe
    return out


if __name__ == "__main__":
    for prog, path in build(verbose=True).items():
        print(f"{prog}: {path}")

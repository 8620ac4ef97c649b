"""The fuzz rig itself: the worker runs this session's build, and memory corruption is caught."""

from __future__ import annotations

import os

import pytest

import fastrelay._core as core
from fuzz.sandbox import Sandbox, WorkerDied

pytestmark = pytest.mark.fuzz


def test_worker_runs_this_sessions_data_plane_under_the_debug_allocator(
        sandbox: Sandbox) -> None:
    info = sandbox.run("build_info", None)
    assert info["core"] == core.__file__
    assert info["pythonmalloc"] == "debug"
    assert info["debug_build"] == core.DEBUG_BUILD


def test_build_is_the_mode_the_environment_asked_for() -> None:
    """scripts/test builds with FASTRELAY_DEBUG=1 and runs these tests with it set: a stale
    release module (or C generated for the other mode) would pass every other test here."""
    wanted = os.environ.get("FASTRELAY_DEBUG")
    if wanted is None:
        pytest.skip("FASTRELAY_DEBUG is not set: no build mode to check")
    assert core.DEBUG_BUILD == (wanted not in ("", "0")), (
        f"{core.__file__} is a {'debug' if core.DEBUG_BUILD else 'release'} build, "
        f"FASTRELAY_DEBUG={wanted!r}")


def test_a_heap_overrun_fails_the_case_and_the_next_case_runs(sandbox: Sandbox) -> None:
    with pytest.raises(WorkerDied, match="FORBIDDENBYTE|bad trailing pad byte"):
        sandbox.run("overrun_heap", 16)
    assert sandbox.run("build_info", None)["pythonmalloc"] == "debug"

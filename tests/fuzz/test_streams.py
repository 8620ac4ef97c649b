"""qemu byte streams cut anywhere, with garbage lengths, into a StreamPort: frames or a clean close."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.checks import rig_sane, sinks_got_plain
from fuzz.profile import fuzz_settings
from fuzz.sandbox import Sandbox
from fuzz.wire import FRAME_MAX, FRAME_MIN, RUNT_LENGTHS, StreamCase, stream_bytes, stream_expected

pytestmark = [pytest.mark.fuzz, pytest.mark.usefixtures("big_buffers")]

CASE_BYTES = 3 << 20  # per case: enough for several full reads (STREAM_READ is 256 KiB)
CASE_FRAMES = 20000   # per case: more than one batch holds (BATCH_MAX: 14,564 records)
max_frames = st.one_of(st.sampled_from([FRAME_MIN, 60, 1500, 1518, 9000, 65535, FRAME_MAX]),
                       st.integers(FRAME_MIN, FRAME_MAX))


def frame_sizes(max_frame: int) -> st.SearchStrategy[int]:
    edges = {FRAME_MIN, FRAME_MIN + 1, 60, 1500, max_frame - 1, max_frame}
    return st.one_of(st.sampled_from(sorted(e for e in edges if FRAME_MIN <= e <= max_frame)),
                     st.integers(FRAME_MIN, max_frame))


@st.composite
def frames(draw: st.DrawFn, max_frame: int) -> tuple:
    """A run of valid records; sometimes thousands of tiny ones (more than one batch holds)."""
    size = draw(frame_sizes(max_frame))
    most = max(1, min(CASE_FRAMES, (CASE_BYTES // 4) // (size + 4)))
    return ("frames", size, draw(st.one_of(st.integers(1, min(most, 40)),
                                           st.integers(1, most))))


def bad_lengths(max_frame: int) -> st.SearchStrategy[int]:
    """Lengths that say the stream cannot be trusted: 0, or more than max_frame."""
    return st.one_of(st.just(0), st.sampled_from([max_frame + 1, FRAME_MAX + 1, 2**31, 2**32 - 1]),
                     st.integers(max_frame + 1, 2**32 - 1))


@st.composite
def stream_cases(draw: st.DrawFn, runts: bool) -> StreamCase:
    """Runs of valid records (with runt records among them if asked), then an ending:
    nothing, a record the stream stops inside, a bad length and garbage, or garbage."""
    max_frame = draw(max_frames)
    runt = st.tuples(st.just("length"), st.sampled_from(RUNT_LENGTHS), st.just(FRAME_MIN))
    body = draw(st.lists(st.one_of(frames(max_frame), runt) if runts else frames(max_frame),
                         min_size=0, max_size=8))
    while sum(item[2] for item in body if item[0] == "frames") > CASE_FRAMES:
        body.pop()  # keep a case within seconds: the worker runs under the debug allocator
    ending = draw(st.one_of(
        st.just([]),
        st.tuples(st.just("length"), frame_sizes(max_frame), st.integers(0, 100)).map(
            lambda item: [item] if item[2] < item[1] else []),
        st.tuples(st.just("length"), bad_lengths(max_frame), st.integers(0, 64)).map(
            lambda item: [item, ("junk", 32)]),
        st.tuples(st.just("junk"), st.integers(1, 64)).map(lambda item: [item]),
    ))
    case = StreamCase(draw(st.sampled_from(["unix", "tcp"])), max_frame,
                      draw(st.integers(0, 2**32 - 1)), tuple(body + ending), (), False)
    total = len(stream_bytes(case))
    cuts = draw(st.lists(st.integers(0, total), max_size=30))
    return StreamCase(case.transport, max_frame, case.seed, case.items, tuple(cuts),
                      draw(st.booleans()))


def check(sandbox: Sandbox, case: StreamCase) -> None:
    result = sandbox.run("stream", case)
    rig_sane(result)
    want = stream_expected(case)
    source, complete = result["stats"]["stream source"], len(want.frames)
    assert source["rx_frames"] == complete, (
        f"source took {source['rx_frames']} frames; the stream holds {complete} complete "
        f"ones before any bad length")
    closes = 1 if want.bad_length is not None else 0
    assert source["drop_invalid"] == want.runts + closes, source
    if want.bad_length is None:
        assert result["closed"] == [], result["closed"]
    else:
        reason = f"bad frame length {want.bad_length} (longest allowed {case.max_frame})"
        assert result["closed"] == [("stream source", reason, True)]
    sinks_got_plain(result, want.frames)


def no_runts(case: StreamCase) -> bool:
    return stream_expected(case).runts == 0


@fuzz_settings(80)
@given(case=stream_cases(runts=False).filter(no_runts))
def test_stream_frames_pass_until_a_bad_length_closes_only_that_port(sandbox: Sandbox,
                                                                     case: StreamCase) -> None:
    check(sandbox, case)


# Issue 9, defect 11 (fixed): a runt length keeps the framing intact; it is dropped and counted and
# the stream goes on, as on the datagram and tap paths.
@fuzz_settings(40)
@given(case=stream_cases(runts=True))
@example(case=StreamCase("unix", FRAME_MAX, 3,
                         (("frames", 60, 2), ("length", 13, FRAME_MIN), ("frames", 60, 2)),
                         (), False))
def test_stream_runts_are_dropped_and_the_stream_goes_on(sandbox: Sandbox,
                                                         case: StreamCase) -> None:
    check(sandbox, case)

"""Datagrams of every size, plain and GSO-coalesced, into a DatagramPort: whole or counted."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.checks import rig_sane, sinks_got_plain
from fuzz.profile import fuzz_settings
from fuzz.sandbox import Sandbox
from fuzz.wire import (
    DGRAM_MAX,
    FRAME_MAX,
    FRAME_MIN,
    GSO_KERNEL_SEGMENTS,
    UDP4_MAX,
    UDP6_MAX,
    DgramCase,
    dgram_expected,
)

pytestmark = [pytest.mark.fuzz, pytest.mark.usefixtures("big_buffers")]

LIMITS = {"udp4": UDP4_MAX, "udp6": UDP6_MAX, "unix": 70000}  # unix: past DGRAM_MAX, truncated
MAX_FRAMES = [FRAME_MIN, FRAME_MIN + 1, 60, 1500, 1518, 9000, 65535, DGRAM_MAX, FRAME_MAX]
# A run GRO hands over in one buffer: every slot of one recvmmsg (64) can hold one.
RUNS_PER_READ = 64


def sizes(limit: int, max_frame: int) -> st.SearchStrategy[int]:
    """0..limit, weighted to the edges where off-by-one errors live."""
    edges = {0, 1, 13, 14, 15, max_frame - 1, max_frame, max_frame + 1, UDP4_MAX, UDP6_MAX,
             65535, DGRAM_MAX, DGRAM_MAX + 1, limit}
    return st.one_of(st.sampled_from(sorted(e for e in edges if 0 <= e <= limit)),
                     st.integers(0, limit))


max_frames = st.one_of(st.sampled_from(MAX_FRAMES), st.integers(FRAME_MIN, FRAME_MAX))


@st.composite
def plain_cases(draw: st.DrawFn) -> DgramCase:
    transport = draw(st.sampled_from(sorted(LIMITS)))
    max_frame = draw(max_frames)
    n = draw(st.integers(1, 40))
    messages = tuple((draw(sizes(LIMITS[transport], max_frame)), 0) for _ in range(n))
    return DgramCase(transport, max_frame, draw(st.integers(0, 2**32 - 1)), messages)


@st.composite
def gso_message(draw: st.DrawFn, limit: int, segments: tuple[int, int]) -> tuple[int, int]:
    """(size, segment) of one UDP_SEGMENT message of segments[0]..segments[1] datagrams.

    Weighted to the largest message of its segment size: that is what fills GRO's buffers.
    """
    lo, hi = segments
    most = (limit - 1) // (lo - 1)  # the largest segment that still makes lo datagrams
    edges = [s for s in (1, 13, 14, 15, 60, 512, 1400, 1472, 8000) if s <= most]
    segment = draw(st.one_of(st.sampled_from(edges), st.integers(1, most)))
    top = min(hi, (limit - 1) // segment + 1)
    count = draw(st.one_of(st.just(top), st.integers(lo, top)))
    top = min(segment, limit - segment * (count - 1))
    last = draw(st.one_of(st.just(top), st.integers(1, top)))
    return segment * (count - 1) + last, segment


@st.composite
def gso_cases(draw: st.DrawFn, max_frame: st.SearchStrategy[int],
              segments: tuple[int, int]) -> DgramCase:
    """UDP messages, all in the socket before the relay reads: GSO runs among plain
    datagrams, or one GSO message repeated enough times to fill a whole recvmmsg."""
    transport = draw(st.sampled_from(["udp4", "udp6"]))
    limit = LIMITS[transport]
    mf = draw(max_frame)
    mixed = st.lists(st.one_of(gso_message(limit, segments),
                               st.tuples(sizes(limit, mf), st.just(0))),
                     min_size=1, max_size=RUNS_PER_READ + 2)
    full = st.builds(lambda m, k: [m] * k, gso_message(limit, segments),
                     st.integers(RUNS_PER_READ - 2, RUNS_PER_READ + 2))
    runs = draw(st.one_of(mixed, full))
    return DgramCase(transport, mf, draw(st.integers(0, 2**32 - 1)), tuple(runs))


def check(sandbox: Sandbox, case: DgramCase) -> None:
    result = sandbox.run("datagrams", case)
    rig_sane(result)
    frames, invalid = dgram_expected(case)
    source = result["stats"][f"{case.transport} source"]
    assert (source["rx_frames"], source["drop_invalid"]) == (len(frames), invalid), (
        f"source took {source['rx_frames']} frames and counted {source['drop_invalid']} "
        f"invalid; the datagrams sent hold {len(frames)} frames and {invalid} invalid")
    assert not result["closed"], result["closed"]  # a bad datagram never closes a port
    sinks_got_plain(result, frames)


@fuzz_settings(60)
@given(case=plain_cases())
def test_datagrams_of_every_size_pass_whole_or_are_counted(sandbox: Sandbox,
                                                           case: DgramCase) -> None:
    check(sandbox, case)


@fuzz_settings(40)
@given(case=gso_cases(st.sampled_from([DGRAM_MAX, FRAME_MAX]), (2, 64)))
def test_gro_runs_up_to_64_segments_are_split_into_their_datagrams(sandbox: Sandbox,
                                                                   case: DgramCase) -> None:
    check(sandbox, case)


# Issue 9, defect 1 (fixed; kept as a regression case): the kernel coalesces up to 128
# segments per message; the spread buffer once had room for 64 headers per slot, so 64
# runs of 65,493 bytes in 512-byte segments wrote 13,632 bytes past it.
@fuzz_settings(20)
@given(case=gso_cases(st.sampled_from([DGRAM_MAX, FRAME_MAX]), (65, GSO_KERNEL_SEGMENTS)))
@example(case=DgramCase("udp4", DGRAM_MAX, 1, ((65493, 512),) * RUNS_PER_READ))
def test_gro_runs_of_up_to_128_segments_stay_in_bounds(sandbox: Sandbox,
                                                       case: DgramCase) -> None:
    check(sandbox, case)


# Issue 9, defect 2 (fixed): with max_frame < 65536 the receive buffer was max_frame + 1
# bytes, so a coalesced run longer than that was truncated and dropped whole (counted once).
@fuzz_settings(30)
@given(case=gso_cases(st.integers(FRAME_MIN, DGRAM_MAX - 1), (2, 64)))
@example(case=DgramCase("udp4", 1518, 2, ((14000, 1400),) * 5))
def test_gro_runs_are_judged_per_datagram_whatever_max_frame(sandbox: Sandbox,
                                                             case: DgramCase) -> None:
    check(sandbox, case)

"""Tap reads with vnet headers of every kind into a TapPort: tap peers get them, plain peers never."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz.checks import delivered_in_order, rig_sane
from fuzz.profile import fuzz_settings
from fuzz.sandbox import Sandbox
from fuzz.wire import (
    FRAME_MAX,
    FRAME_MIN,
    TAP_FRAME_MAX,
    VNET_HDR_LEN,
    TapCase,
    VnetHeader,
    tap_expected,
)

pytestmark = pytest.mark.fuzz

# virtio_net_hdr flags (NEEDS_CSUM 1, DATA_VALID 2, RSC_INFO 4) and gso types (NONE 0,
# TCPV4 1, UDP 3, TCPV6 4, UDP_L4 5, ECN bit 0x80): the defined ones, then any byte.
# A plain frame that needs its checksum (flags 1, gso 0) is the one the relay rewrites: often.
FLAGS = st.one_of(st.just(1), st.sampled_from([0, 1, 2, 3, 4, 5, 7]), st.integers(0, 255))
GSO_TYPES = st.one_of(st.just(0), st.sampled_from([0, 1, 3, 4, 5, 0x80, 0x81, 0x84]),
                      st.integers(0, 255))
max_frames = st.one_of(st.sampled_from([FRAME_MIN, 60, 1514, 1518, 9000, 65535, FRAME_MAX]),
                       st.integers(FRAME_MIN, FRAME_MAX))


def around(*points: int) -> st.SearchStrategy[int]:
    """A 16-bit field near the given points (off by one either way), or anywhere."""
    near = sorted({p + d for p in points for d in (-2, -1, 0, 1) if 0 <= p + d <= 0xFFFF})
    anywhere = st.integers(0, 0xFFFF)
    return st.one_of(st.sampled_from(near), anywhere) if near else anywhere


@st.composite
def message(draw: st.DrawFn, max_frame: int) -> tuple[VnetHeader | None, int]:
    if draw(st.integers(0, 15)) == 0:
        return None, draw(st.integers(0, VNET_HDR_LEN - 1))  # shorter than a header
    edges = [0, 1, 13, FRAME_MIN, FRAME_MIN + 1, 60, 1514, max_frame - 1, max_frame,
             max_frame + 1, 65535, TAP_FRAME_MAX]
    size = draw(st.one_of(st.sampled_from([e for e in edges if 0 <= e <= TAP_FRAME_MAX]),
                          st.integers(0, TAP_FRAME_MAX)))
    # Where an IPv4 or IPv6 header ends, and UDP's or TCP's checksum field; or near the end.
    start = draw(st.one_of(st.sampled_from([0, 14, 34, 54]), around(size)))
    offset = draw(st.one_of(st.sampled_from([6, 16]), around(size - start)))
    header = VnetHeader(draw(FLAGS), draw(GSO_TYPES), draw(st.integers(0, 0xFFFF)),
                        draw(st.integers(0, 0xFFFF)), start, offset)
    return header, size


@st.composite
def tap_cases(draw: st.DrawFn) -> TapCase:
    max_frame = draw(max_frames)
    messages = draw(st.lists(message(max_frame), min_size=1, max_size=40))
    return TapCase(draw(st.sampled_from(["seqpacket", "dgram"])), draw(st.booleans()),
                   draw(st.booleans()), max_frame, draw(st.integers(0, 2**32 - 1)),
                   tuple(messages))


@fuzz_settings(80)
@given(case=tap_cases())
def test_tap_frames_reach_taps_with_their_header_and_plain_peers_complete(
        sandbox: Sandbox, case: TapCase) -> None:
    result = sandbox.run("tap", case)
    rig_sane(result)
    want = tap_expected(case)
    for what, n in (("checksum filled", want.csum_filled), ("gso dropped", want.gso_dropped),
                    ("invalid", want.invalid)):
        event(f"{what}: {'some' if n else 'none'}")  # --hypothesis-show-statistics
    source, extra = result["stats"]["tap source"], result["extra"]["tap source"]
    counted = (source["rx_frames"], source["drop_invalid"], extra["drop_gso"],
               extra["csum_filled"])
    assert counted == (len(want.records), want.invalid, want.gso_dropped, want.csum_filled), (
        f"tap source (frames, invalid, gso dropped, checksums filled) = {counted}, expected "
        f"{(len(want.records), want.invalid, want.gso_dropped, want.csum_filled)}")
    assert not result["closed"], result["closed"]
    delivered_in_order("tap sink", result["sinks"]["tap sink"], want.records,
                       result["stats"]["tap sink"])
    if case.plain_peer:
        delivered_in_order("stream sink", result["sinks"]["stream sink"],
                           [frame for _, frame in want.records], result["stats"]["stream sink"])

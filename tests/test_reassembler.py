"""The compiled FrameReassembler against the pure-Python reference, over random splits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import ReferenceError, ReferenceReassembler, frame_stream

from fastrelay._core import FrameError, FrameReassembler

frame_sizes = st.lists(st.integers(14, 69632), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(sizes=frame_sizes, cuts=st.lists(st.integers(0, 1 << 20), max_size=30), data=st.data())
def test_random_splits_match_reference(sizes, cuts, data) -> None:  # type: ignore[no-untyped-def]
    frames = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    stream = frame_stream(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0] + points, points + [len(stream)])]
    compiled, reference = FrameReassembler(), ReferenceReassembler()
    got_c, got_r = [], []
    for chunk in chunks:
        got_c += compiled.feed_data(chunk)
        got_r += reference.feed_data(chunk)
        assert got_c == got_r
    assert got_c == frames
    assert compiled.pending == 0


@settings(max_examples=100, deadline=None)
@given(good=frame_sizes, bad=st.integers(69633, 2**32 - 1), split=st.integers(0, 200000))
def test_bad_length_raises_like_reference_after_good_frames(good, bad, split) -> None:  # type: ignore[no-untyped-def]
    frames = [b"\x01" * n for n in good]
    stream = frame_stream(frames) + struct.pack(">I", bad) + b"\x00" * 20
    split %= len(stream) + 1
    compiled, reference = FrameReassembler(), ReferenceReassembler()
    out_c: list[bytes] = []
    out_r: list[bytes] = []
    with pytest.raises(FrameError, match=f"bad frame length {bad} "):
        out_c += compiled.feed_data(stream[:split])
        out_c += compiled.feed_data(stream[split:])
    with pytest.raises(ReferenceError):
        out_r += reference.feed_data(stream[:split])
        out_r += reference.feed_data(stream[split:])
    assert out_c == out_r


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.one_of(st.integers(0, 13), st.integers(14, 2000)), max_size=40),
       splits=st.lists(st.integers(0, 100000), max_size=6))
def test_runts_are_skipped_like_reference(sizes, splits) -> None:  # type: ignore[no-untyped-def]
    """Lengths 0..13 keep the framing: skipped and counted, the frames around them kept."""
    stream = frame_stream([bytes([n % 251]) * n for n in sizes])
    cuts = sorted({s % (len(stream) + 1) for s in splits} | {0, len(stream)})
    compiled, reference = FrameReassembler(), ReferenceReassembler()
    out_c: list[bytes] = []
    out_r: list[bytes] = []
    for a, b in zip(cuts, cuts[1:]):
        out_c += compiled.feed_data(stream[a:b])
        out_r += reference.feed_data(stream[a:b])
    assert out_c == out_r == [bytes([n % 251]) * n for n in sizes if n >= 14]
    assert compiled.runts == reference.runts == sum(1 for n in sizes if n < 14)


def test_header_split_byte_by_byte() -> None:
    frame = b"\xab" * 100
    stream = frame_stream([frame, frame])
    r = FrameReassembler()
    out = []
    for i in range(len(stream)):
        out += r.feed_data(stream[i:i + 1])
        if i < 3:
            assert r.pending == i + 1
    assert out == [frame, frame]


def test_max_frame_is_configurable() -> None:
    r = FrameReassembler(1500)
    assert r.feed_data(frame_stream([b"x" * 1500])) == [b"x" * 1500]
    with pytest.raises(FrameError, match="longest allowed 1500"):
        r.feed_data(frame_stream([b"x" * 1501]))
    with pytest.raises(ValueError):
        FrameReassembler(70000)


def test_accepts_any_buffer() -> None:
    frames = [b"a" * 14, b"b" * 60]
    stream = frame_stream(frames)
    assert FrameReassembler().feed_data(memoryview(bytearray(stream))) == frames


def test_many_small_frames_in_one_chunk() -> None:
    # More records than one batch holds: the reassembler hands them on in several batches.
    frames = [bytes([i % 256]) * 14 for i in range(40000)]
    assert FrameReassembler().feed_data(frame_stream(frames)) == frames

"""Review 3 of the batch wait: a capturing hub's busy rounds, and a Hub refused at construction."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from peers import DgramPeer, make_frame
from test_batch_wait import two_port_hub

from fastrelay._core import Capture, Hub

WAIT = 1e-3
# One round reads at most READS_PER_EVENT * DGRAM_BATCH datagrams of a port (consts.pxi).
ROUND_DATAGRAMS = 4 * 64
FRAME = 100
# A pcapng Enhanced Packet Block of one FRAME-byte frame: 28 bytes of fields, the frame
# (a multiple of 4 here), then epb_flags, opt_endofopt and the trailing length (16).
EPB = 28 + FRAME + 16


def test_a_capturing_hub_leaves_its_captures_to_the_control_plane_after_a_busy_round() -> None:
    """The control plane empties a capture between polls only (CaptureSession.after_poll).
    A poll() that went on from one busy round to the next filled the buffer with every
    round's frames before anyone could write them out: frames were dropped although the
    output kept up. Here the buffer holds one round's frames (both directions), not all."""
    a, b = DgramPeer(), DgramPeer()
    hub, pa, pb = two_port_hub(a, b, WAIT)
    count = ROUND_DATAGRAMS + 44
    capture = Capture(ROUND_DATAGRAMS * 2 * EPB + 4096)
    assert capture.cap < count * 2 * EPB
    capture.select(pa.switch_id, 0)
    capture.select(pb.switch_id, 1)
    hub.add_capture(capture)
    a.send([make_frame(FRAME, i) for i in range(count)])
    time.sleep(0.05)  # all in the socket before the first poll
    taken = 0
    for _ in range(10):  # a poll, then what the output writes (it keeps up)
        hub.poll()
        taken += len(capture.take())
        if pa.stats()["rx_frames"] == count:
            break
    assert capture.dropped == 0
    assert pa.stats()["rx_frames"] == count
    assert capture.captured == 2 * count and taken == 2 * count * EPB
    assert len(b.recv(count)) == count


@pytest.fixture
def stdin_pipe() -> Iterator[int]:
    """fd 0 is a pipe of this test's own (the original is put back afterwards); yields
    the inode of the pipe, to tell whether fd 0 is still that pipe."""
    try:
        saved: int | None = os.dup(0)
    except OSError:
        saved = None
    r, w = os.pipe()
    os.dup2(r, 0)
    try:
        yield os.fstat(r).st_ino
    finally:
        if saved is None:
            os.close(0)
        else:
            os.dup2(saved, 0)
            os.close(saved)
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("kwargs", [{"budget": "64 MiB"}, {"no_such_option": 1}])
def test_a_hub_refused_its_arguments_closes_no_descriptor(stdin_pipe: int,
                                                          kwargs: dict[str, Any]) -> None:
    # Cython checks __cinit__'s arguments before its body runs, with the fields still zero:
    # __dealloc__ must not take that zero for the hub's epoll descriptor and close fd 0.
    with pytest.raises(TypeError):
        Hub(**kwargs)
    assert os.fstat(0).st_ino == stdin_pipe

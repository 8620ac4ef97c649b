"""The Switch with an overlay (VXLAN) port: remote endpoints learned, handed over, split horizon."""

from __future__ import annotations

import pytest

from fastrelay._core import MacTable, Switch

S = 1_000_000_000
T0 = 5000 * S

A, B, C, D = (bytes.fromhex(f"02000000000{c}") for c in "abcd")
BCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, size: int = 60) -> bytes:
    head = dst + src + b"\x08\x00"
    return head + b"\x00" * (size - len(head))


def rig(forwarding: bool = True) -> tuple[Switch, int, int]:
    """A switch with a VXLAN port and a plain port: (switch, vx, plain)."""
    sw = Switch(forwarding=forwarding)
    return sw, sw.attach(overlay=True), sw.attach()


def test_an_overlay_port_is_a_trunk_whatever_attach_is_told() -> None:
    sw, vx, plain = rig()
    trunk = sw.attach(trunk=True)
    assert sw.is_trunk(vx) and not sw.is_trunk(plain)
    # From VXLAN: to the plain port only, never to the trunk (split horizon) or back.
    assert sw.decide(vx, [frame(BCAST, A)], T0, remotes=[0]) == [{plain}]
    # From the trunk: never to VXLAN either.
    assert sw.decide(trunk, [frame(BCAST, B)], T0) == [{plain}]


def test_sources_are_learned_with_their_remote_and_unicast_goes_to_it() -> None:
    sw, vx, plain = rig()
    sw.decide(vx, [frame(BCAST, A), frame(BCAST, B)], T0, remotes=[0, 3])
    assert sw.fdb.lookup_mac(A, 0, T0, with_remote=True) == (vx, 0)
    assert sw.fdb.lookup_mac(B, 0, T0, with_remote=True) == (vx, 3)
    frames = [frame(A, C), frame(B, C), frame(BCAST, C), frame(D, C), frame(B, C)]
    # Known unicast names its remote; broadcast and unknown D flood: -1 (every remote).
    assert sw.decide_remotes(plain, frames, T0) == [
        {vx: 0}, {vx: 3}, {vx: -1}, {vx: -1}, {vx: 3}]


def test_a_mac_moving_between_remotes_of_one_port_is_no_port_move() -> None:
    sw, vx, plain = rig()
    for step in range(20):  # far more than the loop threshold within one second
        sw.decide(vx, [frame(BCAST, A)], T0 + step * 1000, remotes=[step % 2])
    assert sw.stats()["moves"] == 0 and sw.stats()["loops"] == 0
    assert sw.drain_events() == [] and not sw.is_blocked(vx)
    # The entry follows the host: the latest remote.
    assert sw.fdb.lookup_mac(A, 0, T0 + S, with_remote=True) == (vx, 1)
    assert sw.decide_remotes(plain, [frame(A, C)], T0 + S) == [{vx: 1}]
    # Moving to another port is a move, and then it has no remote.
    sw.decide(plain, [frame(BCAST, A)], T0 + 2 * S)
    assert sw.stats()["moves"] == 1
    assert sw.fdb.lookup_mac(A, 0, T0 + 2 * S, with_remote=True) == (plain, -1)


def test_one_batch_can_move_a_mac_between_remotes() -> None:
    """Two frames from one MAC in one batch, from two remotes: the last one wins (the
    source-repeat shortcut must not skip the second)."""
    sw, vx, _ = rig()
    sw.decide(vx, [frame(BCAST, A), frame(BCAST, A)], T0, remotes=[2, 5])
    assert sw.fdb.lookup_mac(A, 0, T0, with_remote=True) == (vx, 5)


def test_the_whole_batch_to_the_overlay_port_still_carries_each_remote() -> None:
    """Every frame goes to the VXLAN port (so no index would be written for a plain port)
    but some are unicast: the sub-batch must name each frame's remote."""
    sw, vx, plain = rig()
    sw.decide(vx, [frame(BCAST, A), frame(BCAST, B)], T0, remotes=[1, 2])
    frames = [frame(BCAST, C), frame(A, C), frame(B, C), frame(D, C)]
    assert sw.decide_remotes(plain, frames, T0) == [{vx: -1}, {vx: 1}, {vx: 2}, {vx: -1}]


def test_mixed_plan_remotes_follow_their_frames() -> None:
    sw = Switch()
    vx, p1, p2 = sw.attach(overlay=True), sw.attach(), sw.attach()
    sw.decide(vx, [frame(BCAST, A)], T0, remotes=[4])
    sw.decide(p2, [frame(BCAST, B)], T0)
    frames = [frame(BCAST, C), frame(B, C), frame(A, C), frame(BCAST, C), frame(A, C)]
    assert sw.decide_remotes(p1, frames, T0) == [
        {vx: -1, p2: -1}, {p2: -1}, {vx: 4}, {vx: -1, p2: -1}, {vx: 4}]


@pytest.mark.parametrize("forwarding", [False, True])
def test_everything_floods_to_every_remote_in_a_hub(forwarding: bool) -> None:
    sw, vx, plain = rig(forwarding)
    sw.decide(vx, [frame(BCAST, A)], T0, remotes=[1])
    out = sw.decide_remotes(plain, [frame(A, C), frame(BCAST, C)], T0)
    assert out == ([{vx: 1}, {vx: -1}] if forwarding else [{vx: -1}, {vx: -1}])


def test_a_plain_destination_never_sees_a_remote() -> None:
    """Frames from VXLAN to a plain port: that port's sub-batch has no remotes to read."""
    sw, vx, plain = rig()
    sw.decide(plain, [frame(BCAST, C)], T0)
    assert sw.decide_remotes(vx, [frame(C, A), frame(BCAST, B)], T0,
                             remotes=[0, 1]) == [{plain: -1}, {plain: -1}]


def test_a_frame_to_a_mac_behind_vxlan_from_vxlan_is_filtered() -> None:
    sw, vx, _ = rig()
    sw.decide(vx, [frame(BCAST, A)], T0, remotes=[0])
    assert sw.decide(vx, [frame(A, B)], T0, remotes=[1]) == [set()]
    assert sw.port_stats(vx)["filtered"] == 1


def test_table_learn_and_lookup_with_remote() -> None:
    table = MacTable(16)
    assert table.learn_mac(A, 0, 7, T0, remote=2) == ("new", -1)
    assert table.learn_mac(A, 0, 7, T0, remote=2) == ("refreshed", -1)
    assert table.learn_mac(A, 0, 7, T0, remote=3) == ("moved", 7)
    assert table.lookup_mac(A, 0, T0, with_remote=True) == (7, 3)
    assert table.lookup_mac(B, 0, T0, with_remote=True) == (-1, -1)

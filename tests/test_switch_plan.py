"""The compiled Switch's per-frame decisions: unit cases and a property test against the reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_switch import ReferenceSwitch

from fastrelay._core import Switch

S = 1_000_000_000
MS = 1_000_000
T0 = 5000 * S

A, B, C, D = (bytes.fromhex(f"02000000000{c}") for c in "abcd")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")
STP = bytes.fromhex("0180c2000000")
LLDP = bytes.fromhex("0180c200000e")


def frame(dst: bytes, src: bytes, vlan: int | None = None, size: int = 60) -> bytes:
    """An Ethernet frame dst <- src, 802.1Q-tagged when vlan is given, padded to size."""
    tag = b"\x81\x00" + (0xE000 | vlan).to_bytes(2, "big") if vlan is not None else b""
    head = dst + src + tag + b"\x08\x00"
    return head + b"\x00" * max(0, size - len(head))


def text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def switch(n: int = 3, trunks: tuple[int, ...] = (), **kwargs: Any) -> tuple[Switch, list[int]]:
    sw = Switch(**kwargs)
    return sw, [sw.attach(trunk=i in trunks) for i in range(n)]


def test_unknown_floods_then_learned_unicast_goes_to_one_port() -> None:
    sw, (p, q, r) = switch()
    assert sw.decide(p, [frame(B, A)], T0) == [{q, r}]  # B unknown: flood
    assert sw.decide(q, [frame(A, B)], T0) == [{p}]     # A learned on p
    assert sw.decide(p, [frame(B, A)], T0) == [{q}]     # B learned on q
    assert sw.port_stats(p) == {"unicast": 1, "flooded": 1, "filtered": 0, "drop_blocked": 0}
    assert sorted(sw.entries(T0)) == sorted([(text(A), 0, p, 0.0), (text(B), 0, q, 0.0)])


def test_destination_behind_ingress_is_filtered() -> None:
    sw, (p, q, _) = switch()
    sw.decide(p, [frame(BCAST, A), frame(BCAST, B)], T0)  # A and B both behind p
    assert sw.decide(p, [frame(B, A)], T0) == [set()]
    assert sw.port_stats(p)["filtered"] == 1
    assert sw.port_stats(q)["filtered"] == 0


@pytest.mark.parametrize("dst", [BCAST, MCAST, STP, LLDP], ids=["bcast", "mcast", "stp", "lldp"])
def test_group_destinations_flood_to_all_but_ingress(dst: bytes) -> None:
    sw, (p, q, r) = switch()
    sw.decide(q, [frame(BCAST, A)], T0)
    assert sw.decide(p, [frame(dst, B)], T0) == [{q, r}]


def test_group_and_zero_sources_are_not_learned() -> None:
    sw, (p, q, r) = switch()
    sw.decide(p, [frame(BCAST, MCAST), frame(BCAST, bytes(6))], T0)
    assert sw.entries(T0) == []
    assert sw.decide(q, [frame(bytes(6), B)], T0) == [{p, r}]


def test_vlans_are_separate_tables() -> None:
    sw, (p, q, r) = switch()
    sw.decide(p, [frame(BCAST, A, vlan=10)], T0)
    assert sw.decide(q, [frame(A, B, vlan=10)], T0) == [{p}]
    assert sw.decide(q, [frame(A, B, vlan=20)], T0) == [{p, r}]
    assert sw.decide(q, [frame(A, B)], T0) == [{p, r}]
    # The priority bits of the tag are not part of the VLAN id; VLAN 0 is untagged.
    sw.decide(r, [frame(BCAST, C, vlan=0)], T0)
    assert sw.decide(q, [frame(C, B)], T0) == [{r}]
    assert (text(A), 10, p, 0.0) in sw.entries(T0)


def test_a_runt_tag_is_read_as_untagged() -> None:
    sw, (p, q, _) = switch()
    sw.decide(p, [frame(BCAST, A)], T0)
    runt = frame(A, B, vlan=10)[:16]  # 0x8100 but no room for the whole tag + type
    assert sw.decide(q, [runt], T0) == [{p}]


def test_split_horizon_between_trunks() -> None:
    sw, (p, t1, t2) = switch(trunks=(1, 2))
    # From a trunk: flood to plain ports only; from a plain port: to every trunk.
    assert sw.decide(t1, [frame(BCAST, A)], T0) == [{p}]
    assert sw.decide(p, [frame(BCAST, B)], T0) == [{t1, t2}]
    # Unicast from a trunk to a MAC behind another trunk is never sent (a full mesh
    # delivered it directly already).
    sw.decide(t2, [frame(BCAST, C)], T0)
    assert sw.decide(t1, [frame(C, A)], T0) == [set()]
    assert sw.port_stats(t1)["filtered"] == 1
    assert sw.decide(p, [frame(C, B)], T0) == [{t2}]
    assert sw.is_trunk(t1) and not sw.is_trunk(p)


def test_entries_age_out_and_floods_resume() -> None:
    sw, (p, q, r) = switch(mac_age=2.0)
    sw.decide(p, [frame(BCAST, A)], T0)
    assert sw.decide(q, [frame(A, B)], T0 + 2 * S) == [{p}]
    assert sw.decide(q, [frame(A, B)], T0 + 2 * S + MS) == [{p, r}]
    assert [e[0] for e in sw.entries(T0 + 2 * S + MS)] == [text(B)]
    assert sw.stats()["entries"] == 2
    # tick() frees expired entries in steps; 16 ticks cover the table.
    assert sum(sw.tick(T0 + 5 * S) for _ in range(16)) == 2
    assert sw.stats()["entries"] == 0


def test_detach_forgets_the_port_and_its_id() -> None:
    sw, (p, q, r) = switch()
    sw.decide(p, [frame(BCAST, A), frame(BCAST, C)], T0)
    assert sw.detach(p) == 2
    assert sw.entries(T0) == []
    assert sw.decide(q, [frame(A, B)], T0) == [{r}]
    p2 = sw.attach()
    assert p2 != p and p2 not in (q, r)
    with pytest.raises(ValueError, match=f"port id {p} is not attached"):
        sw.decide(p, [frame(A, B)], T0)
    with pytest.raises(ValueError, match="is not attached"):
        sw.port_stats(p)
    assert sw.port_ids == [q, r, p2]
    assert sw.decide(q, [frame(A, B)], T0) == [{r, p2}]


def test_mixed_batch_plans_each_port_its_subset() -> None:
    sw, (p, q, r) = switch()
    sw.decide(q, [frame(BCAST, B)], T0)
    sw.decide(r, [frame(BCAST, C)], T0)
    batch = [frame(BCAST, A), frame(MCAST, A), frame(B, A), frame(C, A), frame(D, A),
             frame(B, A), frame(A, A)]
    want = [{q, r}, {q, r}, {q}, {r}, {q, r}, {q}, set()]
    assert sw.decide(p, batch, T0) == want
    assert sw.decide(p, batch, T0, with_vnet=True) == want
    assert sw.port_stats(p) == {"unicast": 6, "flooded": 6, "filtered": 2, "drop_blocked": 0}


def test_source_learned_mid_batch_counts_for_later_frames() -> None:
    sw, (p, q, r) = switch()
    assert sw.decide(p, [frame(BCAST, A), frame(A, B), frame(B, C)], T0) == [
        {q, r}, set(), set()]


def test_hub_mode_floods_everything_and_only_detects() -> None:
    sw, (p, q, r) = switch(forwarding=False, move_threshold=1)
    assert sw.mode == "hub"
    sw.decide(q, [frame(BCAST, B)], T0)
    assert sw.decide(p, [frame(B, A)] * 3, T0) == [{q, r}] * 3
    # A duplicate MAC and a flapping one are still reported; no port is blocked.
    sw.decide(r, [frame(BCAST, B)], T0 + MS)
    sw.decide(q, [frame(BCAST, B)], T0 + 2 * MS)
    assert sw.drain_events() == [("duplicate", text(B), 0, q, r), ("loop", text(B), 0, r, q)]
    assert not sw.is_blocked(q)
    assert sw.stats()["duplicates"] == 1 and sw.stats()["loops"] == 1


def test_flapping_mac_blocks_the_later_port_for_the_hold_time() -> None:
    sw, (p, t1, t2) = switch(trunks=(1, 2), move_threshold=2, hold=3.0)
    flap = [(t1, 0), (t2, 100), (t1, 200), (t2, 300)]  # 3 moves within one second
    for port, at in flap[:-1]:
        assert sw.decide(port, [frame(BCAST, A)], T0 + at * MS) == [{p}]
    # The third move crosses the threshold: t2 is blocked from now, this frame included.
    assert sw.decide(t2, [frame(BCAST, A), frame(BCAST, B)], T0 + 300 * MS) == [set(), set()]
    assert sw.drain_events() == [("loop", text(A), 0, t1, t2)]
    assert sw.is_blocked(t2)
    assert sw.port_stats(t2)["drop_blocked"] == 2
    assert sw.stats()["moves"] == 3 and sw.stats()["loops"] == 1
    assert sw.entries(T0 + 300 * MS) == []  # A was on t2: flushed with it
    # Blocked both ways: nothing from t2, nothing to t2.
    assert sw.decide(p, [frame(BCAST, C)], T0 + S) == [{t1}]
    assert sw.decide(t2, [frame(BCAST, D)], T0 + S) == [set()]
    # The hold ends: forwarding resumes, and the control plane hears of it.
    assert sw.decide(p, [frame(BCAST, C)], T0 + 3300 * MS) == [{t1, t2}]
    assert sw.drain_events() == [("unblocked", None, 0, -1, t2)]
    assert not sw.is_blocked(t2)


def test_moves_slower_than_the_threshold_are_not_a_loop() -> None:
    sw, (p, q, _) = switch(move_threshold=2)
    for i in range(10):
        sw.decide(p if i % 2 else q, [frame(BCAST, A)], T0 + i * 600 * MS)
    assert sw.stats()["moves"] == 9 and sw.stats()["loops"] == 0
    assert not sw.is_blocked(p) and not sw.is_blocked(q)


def test_move_window_is_one_second_from_its_first_move() -> None:
    sw, (p, q, _) = switch(move_threshold=1, dup_window=0.0)
    sw.decide(p, [frame(BCAST, A)], T0)            # learned: the window opens
    sw.decide(q, [frame(BCAST, A)], T0 + 500 * MS)  # move 1
    sw.decide(p, [frame(BCAST, A)], T0 + S)        # 1 s on: a new window, move 1 again
    assert sw.stats()["loops"] == 0
    sw.decide(q, [frame(BCAST, A)], T0 + 1999 * MS)  # move 2 within it: a loop
    assert sw.stats()["loops"] == 1
    assert sw.drain_events() == [("loop", text(A), 0, p, q)]


def test_tick_ends_a_hold_without_traffic() -> None:
    sw, (p, q, _) = switch(move_threshold=1, hold=1.0, dup_window=0.0)
    sw.decide(p, [frame(BCAST, A)], T0)
    sw.decide(q, [frame(BCAST, A)], T0 + 10 * MS)
    sw.decide(p, [frame(BCAST, A)], T0 + 20 * MS)
    assert sw.is_blocked(p)
    sw.tick(T0 + 1019 * MS)
    assert sw.is_blocked(p)
    sw.tick(T0 + 1020 * MS)
    assert not sw.is_blocked(p)
    assert [e[0] for e in sw.drain_events()] == ["loop", "unblocked"]


def test_duplicate_mac_on_two_plain_ports() -> None:
    sw, (p, q, t) = switch(trunks=(2,), dup_window=2.0)
    sw.decide(p, [frame(BCAST, A)], T0)
    sw.decide(q, [frame(BCAST, A)], T0 + 1500 * MS)
    assert sw.drain_events() == [("duplicate", text(A), 0, p, q)]
    # Reported once a minute, not per flap.
    sw.decide(p, [frame(BCAST, A)], T0 + 2 * S)
    sw.decide(q, [frame(BCAST, A)], T0 + 3 * S)
    assert sw.drain_events() == []
    assert sw.stats()["duplicates"] == 1
    sw.decide(q, [frame(BCAST, A)], T0 + 61500 * MS)  # p's last frame was 59.5 s ago
    assert sw.drain_events() == []
    sw.decide(p, [frame(BCAST, A)], T0 + 62 * S)  # a minute after the first report
    assert sw.drain_events() == [("duplicate", text(A), 0, q, p)]
    # A MAC seen behind a trunk is a remote guest, and a slow move is a guest that moved.
    sw.decide(p, [frame(BCAST, B)], T0 + 63 * S)
    sw.decide(t, [frame(BCAST, B)], T0 + 63 * S + MS)
    sw.decide(q, [frame(BCAST, C)], T0 + 63 * S)
    sw.decide(p, [frame(BCAST, C)], T0 + 65001 * MS)
    assert sw.drain_events() == []
    assert sw.stats()["duplicates"] == 2


def test_event_ring_is_bounded() -> None:
    sw, (p, q, _) = switch(dup_window=5.0)
    macs = [bytes.fromhex("02") + i.to_bytes(5, "big") for i in range(100)]
    sw.decide(p, [frame(BCAST, m) for m in macs], T0)
    sw.decide(q, [frame(BCAST, m) for m in macs], T0 + MS)
    events = sw.drain_events()
    assert len(events) == 64
    assert events[0] == ("duplicate", text(macs[0]), 0, p, q)
    assert sw.stats()["events_lost"] == 36
    assert sw.drain_events() == []


def test_full_table_floods_and_counts() -> None:
    sw, (p, q, r) = switch(capacity=2)
    sw.decide(p, [frame(BCAST, A), frame(BCAST, B), frame(BCAST, C)], T0)
    assert sw.stats()["full_refused"] == 1
    assert sw.decide(q, [frame(C, D), frame(A, D)], T0) == [{p, r}, {p}]


def test_bad_input_is_one_line() -> None:
    sw, (p, _, _) = switch()
    with pytest.raises(ValueError, match="frame of 13 bytes: allowed 14.."):
        sw.decide(p, [b"x" * 13], T0)
    with pytest.raises(ValueError, match="move threshold 0 out of range"):
        Switch(move_threshold=0)
    with pytest.raises(ValueError, match="hold time -1 s out of range"):
        Switch(hold=-1.0)
    with pytest.raises(ValueError, match="MAC age 1e\\+07 s out of range"):
        Switch(mac_age=1e7)
    full = Switch()
    for _ in range(4096):
        full.attach()
    with pytest.raises(ValueError, match="switch is full: 4096 ports"):
        full.attach()


# The property test: random traffic over a few ports (some trunks), with port closes and
# time steps for aging, moves, holds and the uint32 ms clock's wrap; every frame's set of
# destination ports, every event and every counter must equal the reference's.

UNICAST = [bytes.fromhex(f"0200000000{i:02x}") for i in range(1, 5)]
GROUP = [BCAST, MCAST, STP, LLDP, bytes.fromhex("333300000001")]

frames_st = st.builds(
    lambda dst, src, vlan, size: frame(dst, src, vlan, 64)[:size],
    st.sampled_from(UNICAST * 2 + GROUP),
    st.sampled_from(UNICAST * 3 + [bytes(6), MCAST]),
    st.sampled_from([None, None, None, 0, 1, 4095]),
    st.sampled_from([14, 16, 17, 18, 64, 64]),
)
op_kinds = {
    "batch": st.tuples(st.just("batch"), st.integers(0, 7),
                       st.lists(frames_st, min_size=1, max_size=8), st.booleans()),
    "time": st.tuples(st.just("time"), st.sampled_from([0, 1, 150, 150, 400, 999, 1000, 1001,
                                                        2000, 2001, 6000, 6001])),
    "close": st.tuples(st.just("close"), st.integers(0, 7)),
    "open": st.tuples(st.just("open"), st.booleans()),
    "tick": st.tuples(st.just("tick")),
}
# Mostly traffic, with time passing often enough for windows, holds and aging to matter.
ops_st = st.lists(st.sampled_from(["batch"] * 6 + ["time"] * 3 + ["close", "open", "tick"])
                  .flatmap(op_kinds.__getitem__), min_size=10, max_size=60)
aging_st = st.fixed_dictionaries({
    "forwarding": st.booleans(), "capacity": st.just(4096),
    "mac_age": st.sampled_from([2.0, 6.0]), "move_threshold": st.integers(1, 3),
    "hold": st.sampled_from([0.0, 1.0, 3.0]), "dup_window": st.sampled_from([0.0, 1.0, 2.0]),
})
# A tiny table never ages here (its expired entries would wait for the sweep), so the
# property covers the full-table path exactly.
full_st = st.fixed_dictionaries({
    "forwarding": st.booleans(), "capacity": st.integers(1, 3), "mac_age": st.just(1e6),
    "move_threshold": st.integers(1, 3), "hold": st.sampled_from([0.0, 1.0]),
    "dup_window": st.just(1.0),
})


@settings(max_examples=400, deadline=None)
@given(config=st.one_of(aging_st, full_st), trunks=st.lists(st.booleans(), min_size=2,
       max_size=5), start=st.sampled_from([T0, (1 << 32) * MS - 3 * S]), ops=ops_st)
def test_plans_match_reference(config: dict[str, Any], trunks: list[bool], start: int,
                               ops: list[tuple]) -> None:  # type: ignore[type-arg]
    sw, ref = Switch(**config), ReferenceSwitch(**config)
    ports: list[int] = []

    def attach(trunk: bool) -> None:
        port = sw.attach(trunk=trunk)
        ref.attach(port, trunk)
        ports.append(port)

    for trunk in trunks:
        attach(trunk)
    now = start
    for op in ops:
        if op[0] == "batch" and ports:
            ingress = ports[op[1] % len(ports)]
            assert sw.decide(ingress, op[2], now, with_vnet=op[3]) == ref.decide(ingress, op[2], now)
        elif op[0] == "time":
            now += op[1] * MS
        elif op[0] == "close" and ports:
            port = ports.pop(op[1] % len(ports))
            forgotten = sw.detach(port), ref.detach(port)
            if config["capacity"] < 4096:  # else expired entries may or may not be swept yet
                assert forgotten[0] == forgotten[1]
        elif op[0] == "open" and len(ports) < 6:
            attach(op[1])
        elif op[0] == "tick":
            sw.tick(now)
            ref.tick(now)
        assert sw.drain_events() == ref.drain_events()
        stats = sw.stats()
        for key, value in ref.stats.items():
            assert stats[key] == value, key
        if config["capacity"] < 4096:
            assert stats["entries"] == len(ref.table)
        for port in ports:
            assert sw.port_stats(port) == ref.ports[port].counters
            assert sw.is_blocked(port) == ref.ports[port].blocked
        assert sorted(sw.entries(now)) == sorted(ref.entries(now))

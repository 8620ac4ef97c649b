"""The compiled MAC table: learning, lookup, aging, flushing and its bound, against a dict model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrelay._core import MacTable

S = 1_000_000_000  # ns per second
MS = 1_000_000
T0 = 1000 * S  # any monotonic time; the table only looks at differences

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def test_learn_reports_new_refreshed_moved() -> None:
    t = MacTable()
    assert t.learn_mac(A, 0, 1, T0) == ("new", -1)
    assert t.learn_mac(A, 0, 1, T0 + S) == ("refreshed", -1)
    assert t.learn_mac(A, 0, 2, T0 + 2 * S) == ("moved", 1)
    assert t.lookup_mac(A, 0, T0 + 2 * S) == 2
    assert t.count == 1


def test_unknown_and_vlans_are_separate_keys() -> None:
    t = MacTable()
    t.learn_mac(A, 0, 1, T0)
    t.learn_mac(A, 5, 2, T0)
    assert t.lookup_mac(A, 0, T0) == 1
    assert t.lookup_mac(A, 5, T0) == 2
    assert t.lookup_mac(A, 6, T0) == -1
    assert t.lookup_mac(B, 0, T0) == -1
    assert t.count == 2


def test_mac_as_bytes_or_text() -> None:
    t = MacTable()
    t.learn_mac(bytes.fromhex("02000000000a"), 0, 3, T0)
    assert t.lookup_mac(A, 0, T0) == 3
    with pytest.raises(ValueError, match="not 6 bytes"):
        t.lookup_mac(b"\x02\x00", 0, T0)


def test_entry_lives_exactly_max_age() -> None:
    t = MacTable(max_age=2.0)
    t.learn_mac(A, 0, 1, T0)
    assert t.lookup_mac(A, 0, T0 + 2 * S) == 1
    assert t.lookup_mac(A, 0, T0 + 2 * S + MS) == -1
    assert t.entries(T0 + 2 * S + MS) == []
    # Gone for learning too: it comes back as new, not as a move.
    assert t.learn_mac(A, 0, 2, T0 + 3 * S) == ("new", -1)
    assert t.count == 1


def test_refresh_extends_life() -> None:
    t = MacTable(max_age=2.0)
    t.learn_mac(A, 0, 1, T0)
    t.learn_mac(A, 0, 1, T0 + S)
    assert t.lookup_mac(A, 0, T0 + 3 * S) == 1
    assert t.lookup_mac(A, 0, T0 + 3 * S + MS) == -1


def test_sweep_frees_expired_entries_in_bounded_steps() -> None:
    t = MacTable(capacity=1001, max_age=1.0)
    for i in range(1000):
        t.learn_mac(i.to_bytes(6, "big"), 0, 1, T0)
    t.learn_mac(A, 0, 2, T0 + 2 * S)  # still fresh when the sweep runs
    later = T0 + 2 * S
    # A step of 16 looks at 16 slots, or fewer when it frees some (it looks again there).
    freed_by_step = [t.sweep(later, 16) for _ in range((t.slot_count + 1000) // 16 + 1)]
    assert max(freed_by_step) <= 16
    assert sum(freed_by_step) == 1000
    assert t.count == 1
    assert t.lookup_mac(A, 0, later) == 2


def test_sweep_all_catches_up() -> None:
    t = MacTable(capacity=100, max_age=1.0)
    for i in range(50):
        t.learn_mac(i.to_bytes(6, "big"), 0, 1, T0)
    assert t.sweep_all(T0 + S) == 0
    assert t.sweep_all(T0 + S + MS) == 50
    assert t.count == 0


def test_flush_forgets_one_port_only() -> None:
    t = MacTable(capacity=64)
    for i in range(40):
        t.learn_mac(i.to_bytes(6, "big"), i % 3, i % 4, T0)
    assert t.flush(2) == 10
    for i in range(40):
        want = -1 if i % 4 == 2 else i % 4
        assert t.lookup_mac(i.to_bytes(6, "big"), i % 3, T0) == want
    assert t.count == 30


def test_full_table_refuses_and_counts() -> None:
    t = MacTable(capacity=2)
    assert t.learn_mac(A, 0, 1, T0)[0] == "new"
    assert t.learn_mac(B, 0, 1, T0)[0] == "new"
    assert t.learn_mac(C, 0, 1, T0) == ("full", -1)
    assert t.full_refused == 1
    assert t.lookup_mac(C, 0, T0) == -1
    # Known keys still refresh and move while full.
    assert t.learn_mac(A, 0, 2, T0)[0] == "moved"
    # An expired entry's slot is reused without counting as growth.
    t2 = MacTable(capacity=1, max_age=1.0)
    t2.learn_mac(A, 0, 1, T0)
    assert t2.learn_mac(A, 0, 3, T0 + 2 * S) == ("new", -1)
    assert t2.learn_mac(B, 0, 3, T0 + 2 * S) == ("full", -1)


def test_random_source_flood_stays_at_capacity() -> None:
    t = MacTable(capacity=4096)
    slots = t.slot_count
    rng = __import__("random").Random(7)
    for _ in range(40000):
        t.learn_mac((rng.getrandbits(48) & ~(1 << 40)).to_bytes(6, "big"), rng.randrange(4096),
                    1, T0)
    assert t.count == 4096
    assert t.full_refused >= 40000 - 4096
    assert t.slot_count == slots == 4096 * 3 // 2 + 1


def test_times_wrap_the_uint32_millisecond_clock() -> None:
    wrap = (1 << 32) * MS  # the table's ms clock wraps here
    t = MacTable(max_age=2.0)
    t.learn_mac(A, 0, 1, wrap - 500 * MS)
    assert t.lookup_mac(A, 0, wrap + 1500 * MS) == 1
    assert t.entries(wrap + 1000 * MS) == [(A, 0, 1, 1.5)]
    assert t.lookup_mac(A, 0, wrap + 1501 * MS) == -1


def test_entries_lists_live_keys_with_age() -> None:
    t = MacTable(max_age=10.0)
    t.learn_mac(A, 0, 1, T0)
    t.learn_mac(B, 4095, 2, T0 + 500 * MS)
    assert sorted(t.entries(T0 + 2 * S)) == [(A, 0, 1, 2.0), (B, 4095, 2, 1.5)]


@pytest.mark.parametrize("kwargs, message", [
    ({"capacity": 0}, "capacity 0 out of range"),
    ({"capacity": 1 << 25}, "out of range"),
    ({"max_age": -1.0}, "MAC age -1 s out of range"),
    ({"max_age": 3e6}, "MAC age 3e\\+06 s out of range"),
])
def test_bad_configuration_is_one_line(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MacTable(**kwargs)  # type: ignore[arg-type]


# The table against a dict, on tiny tables where probe runs cluster and wrap around, so that
# learning, flushing and the incremental sweep's backward-shift deletion all meet each other.
keys = st.tuples(st.integers(0, 11), st.sampled_from([0, 1, 4095]))
ops = st.lists(st.one_of(
    st.tuples(st.just("learn"), keys, st.integers(0, 3)),
    st.tuples(st.just("flush"), st.integers(0, 3)),
    st.tuples(st.just("sweep"), st.integers(1, 5)),
    st.tuples(st.just("sweep_all")),
    st.tuples(st.just("time"), st.sampled_from([0, 1, 400, 1000, 1001])),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 8), ops=ops)
def test_table_matches_dict_model(capacity: int, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    t = MacTable(capacity=capacity, max_age=1.0)
    # What the table stores, expired entries included: (MAC, VLAN) -> (port, seen ms).
    model: dict[tuple[int, int], tuple[int, int]] = {}
    now = 0

    def live(k: tuple[int, int]) -> bool:
        return k in model and now - model[k][1] <= 1000

    for op in ops:
        if op[0] == "learn":
            (mac, vlan), port = op[1], op[2]
            got = t.learn_mac(mac.to_bytes(6, "big"), vlan, port, T0 + now * MS)
            if live((mac, vlan)):
                was = model[(mac, vlan)][0]
                want = ("refreshed", -1) if was == port else ("moved", was)
            elif (mac, vlan) in model or len(model) < capacity:
                want = ("new", -1)  # an expired entry's slot is reused; or there is room
            else:
                want = ("full", -1)
            assert got == want
            if got[0] != "full":
                model[(mac, vlan)] = (port, now)
        elif op[0] == "flush":
            gone = [k for k, (p, _) in model.items() if p == op[1]]
            assert t.flush(op[1]) == len(gone)
            for k in gone:
                del model[k]
        elif op[0] in ("sweep", "sweep_all"):
            if op[0] == "sweep":
                freed = t.sweep(T0 + now * MS, op[1])
                assert freed <= op[1]
            else:
                freed = t.sweep_all(T0 + now * MS)
            stored = {(mac, vlan): (port, seen) for mac, vlan, port, seen in t.dump()}
            lost = set(model) - set(stored)
            # A sweep frees expired entries only, reports them all, and moves no other.
            assert len(lost) == freed
            assert all(not live(k) for k in lost)
            assert all(model[k][0] == stored[k][0] for k in stored)
            for k in lost:
                del model[k]
            if op[0] == "sweep_all":
                assert all(live(k) for k in model)
        else:
            now += op[1]
        assert t.count == len(model)
        for mac in range(12):
            for vlan in (0, 1, 4095):
                want_port = model[(mac, vlan)][0] if live((mac, vlan)) else -1
                assert t.lookup_mac(mac.to_bytes(6, "big"), vlan, T0 + now * MS) == want_port

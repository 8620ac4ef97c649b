"""Relays linked to each other: a trunk triangle never loops, a real loop is cut, duplicates."""

from __future__ import annotations

import re
import time

from peers import LOOP4, free_port
from switching import BROADCAST, Guest, daemon_stats, mac_text, wait_connected, wait_joined


def _switch_config(ctl: str, guests: int, endpoints: list[str]) -> str:
    listed = ", ".join(f'"{e}"' for e in endpoints)
    return (f'[daemon]\ncontrol = "{ctl}"\n[hub.sw]\nmode = "switch"\n'
            f'listen = "{LOOP4}:{guests}"\nendpoints = [{listed}]\n')


def _trunk_frames(ctl: str) -> list[int]:
    """Frames each link to another relay of the daemon's switch received (all endpoints but
    the guest listener, which comes first)."""
    return [e["rx_frames"] for e in daemon_stats(ctl)["sw"]["endpoints"][1:]]


def test_trunk_triangle_delivers_each_broadcast_once_and_settles(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    g1, g2, g3, t1, t2 = (free_port() for _ in range(5))
    ctl = [str(tmp_path / f"s{i}.sock") for i in (1, 2, 3)]
    # S1 takes trunks on t1 (from S2 and S3), S2 on t2 (from S3): a triangle of trunk links.
    daemon_process(_switch_config(ctl[0], g1, [f"listen:{LOOP4}:{t1},trunk"]))
    daemon_process(_switch_config(ctl[1], g2, [f"listen:{LOOP4}:{t2},trunk",
                                               f"{LOOP4}:{t1},trunk"]))
    daemon_process(_switch_config(ctl[2], g3, [f"{LOOP4}:{t1},trunk", f"{LOOP4}:{t2},trunk"]))
    a1, a2 = Guest((LOOP4, g1), 1), Guest((LOOP4, g1), 2)
    b1, c1 = Guest((LOOP4, g2), 3), Guest((LOOP4, g3), 4)
    wait_connected(ctl[0], "sw", [2, 2])
    wait_connected(ctl[1], "sw", [1, 1, 1])
    wait_connected(ctl[2], "sw", [1, 1, 1])

    sent = a1.send_to(BROADCAST, range(50))
    for guest in (a2, b1, c1):
        assert guest.recv(50) == sent
    for guest in (a1, a2, b1, c1):
        guest.expect_silence(0.3)   # no second copy, nothing echoed
    # Each frame crossed S1-S2 and S1-S3 once and never S2-S3 (split horizon); then nothing
    # moves any more: no frame circulates.
    settled = [_trunk_frames(c) for c in ctl]
    assert settled == [[0], [0, 50], [50, 0]], settled
    time.sleep(0.5)
    assert [_trunk_frames(c) for c in ctl] == settled

    # c1's broadcast teaches every switch where c1 is; a1's answer then goes the short way.
    sent = c1.send_to(BROADCAST, [100])
    for guest in (a1, a2, b1):
        assert guest.recv(1) == sent
    sent = a1.send_to(c1, range(101, 111))
    assert c1.recv(10) == sent
    for guest in (a2, b1):
        guest.expect_silence(0.3)
    assert [_trunk_frames(c) for c in ctl] == [[1], [1, 50], [60, 0]]
    table = {row["mac"]: row for row in daemon_stats(ctl[2])["sw"]["switch"]["mac_table"]}
    assert table[mac_text(a1.mac)]["endpoint"] == f"{LOOP4}:{t1},trunk"
    assert table[mac_text(c1.mac)]["endpoint"] == f"listen:{LOOP4}:{g3}"


def test_two_plain_links_between_switches_storm_stops_within_2s(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    g1, g2, t1, t2 = (free_port() for _ in range(4))
    ctl = [str(tmp_path / f"s{i}.sock") for i in (1, 2)]
    s1 = daemon_process(_switch_config(ctl[0], g1, [f"listen:{LOOP4}:{t1}",
                                                    f"listen:{LOOP4}:{t2}"]))
    # Two plain (non-trunk) links from S2 to S1: a real loop.
    s2 = daemon_process(_switch_config(ctl[1], g2, [f"{LOOP4}:{t1}", f"{LOOP4}:{t2}"]))
    a, b = Guest((LOOP4, g1), 1), Guest((LOOP4, g2), 2)
    # Everything attached before the one broadcast (an earlier one would storm already).
    wait_connected(ctl[0], "sw", [1, 1, 1])
    wait_connected(ctl[1], "sw", [1, 1, 1])
    sent_at = time.monotonic()
    (sent,) = a.send_to(BROADCAST, [7])
    # The loop carries copies round both ways until a switch cuts it.
    copies, last = 0, sent_at
    while True:
        try:
            got = b.recv(1, timeout=0.5)
        except AssertionError:
            break                      # silent for 0.5 s: the storm is over
        copies, last = copies + 1, time.monotonic()
        assert got == [sent]
        assert last - sent_at < 2.0, f"{copies} copies of one broadcast in {last - sent_at:.1f}s"
    assert copies > 1, "no loop: the links did not both carry the broadcast"
    # a got copies back while the storm lasted (read them now); after it, nothing moves.
    while True:
        try:
            a.recv(1, timeout=0.1)
        except AssertionError:
            break
    settled = [_trunk_frames(c) for c in ctl]
    a.expect_silence(0.3)
    b.expect_silence(0.1)
    assert [_trunk_frames(c) for c in ctl] == settled
    links = [daemon_stats(c)["sw"] for c in ctl]
    assert sum(link["switch"]["loops"] for link in links) >= 1
    assert any(p["blocked"] for link in links for e in link["endpoints"] for p in e["ports"])
    logs = "\n".join(s1.lines + s2.lines)
    cut = re.search(rf"loop suspected: {mac_text(a.mac)} \(untagged\) moved between (tcp .+) "
                    rf"and (tcp .+) more than 5 times in 1 s; not forwarding to/from (tcp .+) "
                    rf"for 10 s", logs)
    assert cut and cut.group(2) == cut.group(3), logs
    # A few lines per switch (a loop also looks like a duplicate MAC), not one per frame.
    reports = [line for line in logs.splitlines() if "loop suspected" in line
               or "duplicate MAC" in line]
    assert len(reports) <= 4, logs


def test_duplicate_mac_in_hub_mode_is_one_warning_and_the_hub_still_floods(relay_process) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = relay_process("-l", f"{LOOP4}:{port}")
    x, y, z = Guest((LOOP4, port), 5), Guest((LOOP4, port), 5), Guest((LOOP4, port), 6)
    wait_joined(x, [y, z])
    for _ in range(2):  # 3 moves of the MAC: fewer than a loop's 6 in a second
        sent = x.send_to(BROADCAST, [1])
        assert y.recv(1) == sent and z.recv(1) == sent
        sent = y.send_to(z, [2])          # a hub floods, learned or not
        assert x.recv(1) == sent and z.recv(1) == sent
    err = proc.stderr
    px, py = (g.peer.sock.getsockname()[1] for g in (x, y))
    line = (f"fastrelay: duplicate MAC {mac_text(x.mac)} (untagged): seen on tcp client "
            f"{LOOP4}:{px} and tcp client {LOOP4}:{py} (two guests started with the same mac=?)")
    assert err.splitlines() == [line], err   # once, not once per move


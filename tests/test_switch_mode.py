"""Switch mode over real sockets: learning, unicast, aging, closed ports, a random-MAC flood."""

from __future__ import annotations

import socket
import struct
import threading
import time

from conftest import wait_until
from peers import LOOP4, StreamPeer, free_port
from switching import (
    BROADCAST,
    Guest,
    daemon_stats,
    frame,
    mac,
    mac_text,
    rss_bytes,
    wait_connected,
    wait_joined,
)
from test_metrics import parse_prometheus, value

from fastrelay.control import query


def start_switch(inprocess_relay, n: int, **options: object):  # type: ignore[no-untyped-def]
    """An in-process relay in switch mode with n guests attached (guest i has MAC i + 1)."""
    port = free_port()
    relay = inprocess_relay(listen=f"{LOOP4}:{port}", switch=True, **options)
    guests = [Guest((LOOP4, port), i + 1) for i in range(n)]
    wait_joined(guests[0], guests[1:])
    return relay, guests


def port_stats(relay) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    """Every open port's counters (switch decisions included), by port name."""
    stats = relay.call(relay.relay.endpoint_stats)
    return {p["name"]: p for e in stats for p in e.ports}


def table(relay) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The MAC table as {MAC: port name}."""
    rows = relay.call(lambda: relay.relay.switch_stats(table=True).table)
    return {row["mac"]: row["port"] for row in rows}


def test_unicast_floods_until_learned_then_reaches_only_its_destination(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    relay, (a, b, c) = start_switch(inprocess_relay, 3)
    # a is learned (its broadcasts); b is not yet: a frame to b floods.
    sent = a.send_to(b, range(10))
    assert b.recv(10) == sent and c.recv(10) == sent
    # b answers a: a is known, so only a gets it; and b is learned now.
    sent = b.send_to(a, range(10, 20))
    assert a.recv(10) == sent
    c.expect_silence()
    sent = a.send_to(b, range(20, 120))
    assert b.recv(100) == sent
    c.expect_silence()
    # c was never heard: frames to it still flood (to b as well), but never back to a.
    sent = a.send_to(c, range(120, 125))
    assert b.recv(5) == sent and c.recv(5) == sent
    a.expect_silence(0.1)

    ports = port_stats(relay)
    by_mac = table(relay)
    assert set(by_mac) == {mac_text(a.mac), mac_text(b.mac)}  # c never sent a frame
    pa, pb = (ports.pop(by_mac[mac_text(g.mac)]) for g in (a, b))
    (pc,) = ports.values()
    probes = pa["flooded"] - 15               # wait_joined's broadcasts
    assert probes >= 1
    assert (pa["unicast"], pb["unicast"], pb["flooded"]) == (100, 10, 0)
    assert pc["tx_frames"] == probes + 10 + 5  # c got the floods only
    assert pa["filtered"] == pb["filtered"] == 0 and not pa["trunk"] and not pa["blocked"]


def test_a_mac_unseen_for_mac_age_is_forgotten(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    relay, (a, b, c) = start_switch(inprocess_relay, 3, mac_age=1.0)
    b.send_to(BROADCAST, [1])                 # b learned
    assert a.recv(1) and c.recv(1)
    sent = a.send_to(b, [2])
    assert b.recv(1) == sent
    c.expect_silence(0.1)
    assert mac_text(b.mac) in table(relay)
    time.sleep(1.3)                           # b silent for longer than mac_age
    assert mac_text(b.mac) not in table(relay)
    sent = a.send_to(b, [3])                  # unknown again: flooded
    assert b.recv(1) == sent and c.recv(1) == sent


def test_a_port_that_closes_is_forgotten_at_once(inprocess_relay) -> None:  # type: ignore[no-untyped-def]
    relay, (a, b, c) = start_switch(inprocess_relay, 3)   # mac_age: 300 s
    b.send_to(BROADCAST, [1])
    assert a.recv(1) and c.recv(1)
    assert mac_text(b.mac) in table(relay)
    b.peer.close()
    wait_until(lambda: len(port_stats(relay)) == 2, what="b's port closed")
    assert mac_text(b.mac) not in table(relay)
    # A new guest with b's MAC (b restarted) gets frames to that MAC at once.
    b2 = Guest(a.peer.sock.getpeername(), 2)
    wait_until(lambda: len(port_stats(relay)) == 3, what="b2's port")
    sent = a.send_to(b.mac, [2])
    assert b2.recv(1) == sent and c.recv(1) == sent


def _flood_stream(first: int, last: int) -> bytes:
    """Frames first..last-1 to an unknown unicast MAC; frame i comes from source MAC i // 2."""
    dst = mac(0xFFFFFF)
    out = bytearray()
    for i in range(first, last):
        f = frame(dst, mac(0x100000 + i // 2), i, size=60)
        out += struct.pack(">I", len(f)) + f
    return bytes(out)


def test_random_source_mac_flood_keeps_the_table_at_its_cap(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    total, warmup, cap = 200_000, 20_000, 4096   # 100k source MACs, two frames each
    ctl = str(tmp_path / "ctl.sock")
    port = free_port()
    proc = daemon_process(f"""
[daemon]
control = "{ctl}"
[hub.sw]
listen = "{LOOP4}:{port}"
mode = "switch"
mac_table_size = {cap}
queue = "256k"
""")
    sender = StreamPeer.connect((LOOP4, port))
    sink = socket.create_connection((LOOP4, port))
    wait_connected(ctl, "sw", [2])

    def drain() -> None:
        while sink.recv(1 << 20):
            pass
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def send(first: int, last: int) -> dict[str, object]:
        sender.send_raw(_flood_stream(first, last))
        sender.flush()
        wait_until(lambda: daemon_stats(ctl)["sw"]["endpoints"][0]["rx_frames"] == last, 30,
                   f"{last} frames read")
        return daemon_stats(ctl)["sw"]
    try:
        # The table is full after the first 8192 frames; the stats answers (a full table
        # of 4096 rows) have had their memory once: from here on nothing may grow.
        link = send(0, warmup)
        assert link["switch"]["entries"] == cap
        before = rss_bytes(proc.proc.pid)
        link = send(warmup, total)   # 90,000 more new MACs
        after = rss_bytes(proc.proc.pid)
    finally:
        sink.shutdown(socket.SHUT_RDWR)
        sink.close()
        reader.join(5)
    # 90,000 more MACs than the table holds: any per-MAC memory (even 32 bytes each, the
    # table's own entry size) would add ~3 MiB.
    assert after - before < 1 << 20, f"RSS grew by {(after - before) >> 10} KiB"
    sw = link["switch"]
    assert link["mode"] == "switch" and sw["capacity"] == cap
    assert sw["entries"] == cap and len(sw["mac_table"]) == cap
    # The first `cap` sources were learned; every frame of any other one was refused.
    assert sw["full_refused"] == total - 2 * cap
    assert link["endpoints"][0]["flooded"] == total  # unknown destination: all flooded
    samples, _ = parse_prometheus(query(ctl, "metrics"))
    assert value(samples, "fastrelay_fdb_entries", link="sw") == cap
    assert value(samples, "fastrelay_fdb_capacity", link="sw") == cap
    assert value(samples, "fastrelay_fdb_refused_frames_total", link="sw") == total - 2 * cap
    ep = f"listen:{LOOP4}:{port}"
    assert value(samples, "fastrelay_flooded_frames_total", link="sw", endpoint=ep) == total
    assert value(samples, "fastrelay_unicast_frames_total", link="sw", endpoint=ep) == 0


def test_stats_show_mode_table_and_decisions(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    port, trunk = free_port(), free_port()
    daemon_process(f"""
[daemon]
control = "{ctl}"
[hub.sw]
listen = "{LOOP4}:{port}"
endpoints = ["listen:{LOOP4}:{trunk},trunk"]
mode = "switch"
[hub.plain]
listen = "{LOOP4}:{free_port()}"
""")
    a, b, b2 = Guest((LOOP4, port), 1), Guest((LOOP4, port), 2), Guest((LOOP4, port), 2)
    t = Guest((LOOP4, trunk), 3)   # another relay, with a guest of MAC 3 behind it
    wait_connected(ctl, "sw", [3, 1])
    tagged = frame(BROADCAST, a.mac)[:12] + b"\x81\x00\x00\x0a" + frame(BROADCAST, a.mac)[12:]
    a.peer.send([tagged])                  # a on VLAN 10
    for g in (b, b2, t):
        assert g.recv(1) == [tagged]
    sent = t.send_to(BROADCAST, [1])       # MAC 3 learned on the trunk
    for g in (a, b, b2):
        assert g.recv(1) == sent
    sent = b.send_to(t, [2])               # MAC 2 on b: unicast to the trunk
    assert t.recv(1) == sent
    sent = b2.send_to(t, [3])              # MAC 2 again, on b2: a duplicate MAC
    assert t.recv(1) == sent
    t.send_to(t, [4])                      # to a MAC behind the trunk itself: filtered
    for g in (a, b, b2, t):
        g.expect_silence(0.2)
    wait_until(lambda: daemon_stats(ctl)["sw"]["switch"]["duplicates"] == 1, what="duplicate")

    links = daemon_stats(ctl)
    link, plain = links["sw"], links["plain"]
    assert (link["mode"], plain["mode"]) == ("switch", "hub")
    sw = link["switch"]
    assert (sw["entries"], sw["moves"], sw["duplicates"], sw["loops"]) == (3, 1, 1, 0)
    assert sw["mac_age"] == 300.0 and sw["mac_table_omitted"] == 0
    guests, trunks = link["endpoints"]
    rows = {(row["mac"], row["vlan"]): row for row in sw["mac_table"]}
    assert set(rows) == {(mac_text(a.mac), 10), (mac_text(b.mac), 0), (mac_text(t.mac), 0)}
    behind_trunk = rows[(mac_text(t.mac), 0)]
    assert behind_trunk["port"] == trunks["ports"][0]["name"] and behind_trunk["age"] < 5
    assert behind_trunk["endpoint"] == f"listen:{LOOP4}:{trunk},trunk"
    assert rows[(mac_text(b.mac), 0)]["endpoint"] == f"listen:{LOOP4}:{port}"
    assert (guests["unicast"], guests["flooded"], guests["filtered"]) == (2, 1, 0)
    assert (trunks["unicast"], trunks["flooded"], trunks["filtered"]) == (0, 1, 1)
    assert trunks["ports"][0]["trunk"] and not trunks["ports"][0]["blocked"]

    samples, types = parse_prometheus(query(ctl, "metrics"))
    for name, kind in (("fastrelay_fdb_entries", "gauge"), ("fastrelay_mac_moves_total", "counter"),
                       ("fastrelay_loops_total", "counter"),
                       ("fastrelay_duplicate_macs_total", "counter")):
        assert types[name] == kind
    assert value(samples, "fastrelay_fdb_entries", link="sw") == 3
    assert value(samples, "fastrelay_mac_moves_total", link="sw") == 1
    assert value(samples, "fastrelay_duplicate_macs_total", link="sw") == 1
    assert value(samples, "fastrelay_loops_total", link="sw") == 0
    ep = f"listen:{LOOP4}:{trunk},trunk"
    assert value(samples, "fastrelay_filtered_frames_total", link="sw", endpoint=ep) == 1
    assert value(samples, "fastrelay_unicast_frames_total", link="sw",
                 endpoint=f"listen:{LOOP4}:{port}") == 2
    assert value(samples, "fastrelay_dropped_frames_total", link="sw", endpoint=ep,
                 reason="loop_blocked") == 0

"""The routing lab with no root: one daemon (examples/lab.toml), four routers, two hosts.

Six segments, each a hub (or switch) of one fastrelay daemon; four router guests with two
or three NICs forwarding IPv4 with static routes, and two hosts; h1 pings h2 across rt1,
rt2 and rt4 (LAB.md in the project's shared reference, summed up in tests/qemu/README.md).
The relay and every qemu run as nobody when the test runs as root (CI), so the test
proves what a plain user gets: no bridges, no taps, no privileges.

FASTRELAY_LAB_MODE=hub|switch forces every segment's `mode` (default: as the file says).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from fastrelay.control import query

from .harness import (
    Guest,
    Lab,
    Nic,
    expect_clean_pings,
    nd_stream_unix,
    ping_env,
    process_ids,
    routing_env,
)

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.usefixtures("fastrelay_cli")]

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "lab.toml"
COUNT = 10
# Six TCG guests boot at once on two shared cores: allow for a slow start.
BOOT = 240

# The topology of LAB.md: each guest's NICs as (segment, address, MAC), in eth order.
NICS: dict[str, list[tuple[int, str, str]]] = {
    "rt1": [
        (1, "10.20.10.1/24", "12:34:56:ab:cd:71"),
        (2, "10.20.20.1/24", "12:34:56:ab:cd:72"),
        (3, "10.20.30.1/24", "12:34:56:ab:cd:73"),
    ],
    "rt2": [(2, "10.20.20.2/24", "12:34:56:ab:cd:74"), (4, "10.20.40.2/24", "12:34:56:ab:cd:75")],
    "rt3": [(3, "10.20.30.2/24", "12:34:56:ab:cd:76"), (5, "10.20.50.2/24", "12:34:56:ab:cd:77")],
    "rt4": [
        (4, "10.20.40.1/24", "12:34:56:ab:cd:78"),
        (5, "10.20.50.1/24", "12:34:56:ab:cd:79"),
        (6, "10.20.60.1/24", "12:34:56:ab:cd:7a"),
    ],
    "h1": [(1, "10.20.10.2/24", "12:34:56:ab:cd:7b")],
    "h2": [(6, "10.20.60.2/24", "12:34:56:ab:cd:7c")],
}
ROUTES: dict[str, list[tuple[str, str]]] = {
    "rt1": [
        ("10.20.60.0/24", "10.20.20.2"),
        ("10.20.40.0/24", "10.20.20.2"),
        ("10.20.50.0/24", "10.20.30.2"),
    ],
    "rt2": [("10.20.10.0/24", "10.20.20.1"), ("10.20.60.0/24", "10.20.40.1")],
    "rt3": [("10.20.10.0/24", "10.20.30.1"), ("10.20.60.0/24", "10.20.50.1")],
    "rt4": [
        ("10.20.10.0/24", "10.20.40.2"),
        ("10.20.20.0/24", "10.20.40.2"),
        ("10.20.30.0/24", "10.20.50.2"),
    ],
    "h1": [("default", "10.20.10.1")],
    "h2": [("default", "10.20.60.1")],
}
# h1 -> h2 hop by hop: rt1, rt2, rt4 (segments 1, 2, 4, 6), then h2 itself.
PATH = ["10.20.10.1", "10.20.20.2", "10.20.40.1", "10.20.60.2"]
PATH_SEGMENTS = (1, 2, 4, 6)


def lab_config(mode: str | None) -> str:
    """examples/lab.toml, with every segment's `mode` set to ``mode`` when one is given.

    "hub" drops the key (hub is the default, and older builds do not know the key);
    "switch" puts `mode = "switch"` at the top of every [hub.segN].
    """
    text = CONFIG.read_text()
    if mode is None:
        return text
    if mode not in ("hub", "switch"):
        pytest.fail(f"FASTRELAY_LAB_MODE={mode!r}: expected hub or switch")
    text = re.sub(r"(?m)^mode\s*=.*\n", "", text)
    if mode == "switch":
        text = re.sub(r"(?m)^(\[hub\.seg\d\]\n)", r'\1mode = "switch"\n', text)
    return text


def segment_nic_counts() -> dict[int, int]:
    """How many guest NICs plug into each segment, from the topology table."""
    counts: dict[int, int] = {}
    for nics in NICS.values():
        for seg, _, _ in nics:
            counts[seg] = counts.get(seg, 0) + 1
    return counts


def expect_unprivileged(what: str, pid: int, lab: Lab) -> None:
    """Assert a process runs with no root uid or gid (as the lab's account when it has one)."""
    ids = process_ids(pid)
    if lab.account is not None:
        want = {"Uid": [lab.account.uid] * 4, "Gid": [lab.account.gid] * 4, "Groups": []}
        assert ids == want, f"{what} (pid {pid}) runs as {ids}, expected {want}"
    assert 0 not in ids["Uid"] + ids["Gid"] + ids["Groups"], f"{what} (pid {pid}): {ids}"


def expect_wiring(guest: Guest, nics: list[tuple[int, str, str]]) -> None:
    """Assert init.sh gave every NIC (found by its MAC) the address LAB.md gives it."""
    for i, (_, ip, mac) in enumerate(nics):
        m = guest.wait_for(rf"^FR-UP if=(\S+) ip={re.escape(ip)} .*mac={mac} ", 10)
        assert m.group(1) == f"eth{i}", f"{guest.name}: {mac} is {m.group(1)}, not eth{i}"
    assert "FR-ERROR" not in guest.text(), f"{guest.name}\n{guest.tail()}"


def test_routing_lab_h1_pings_h2_across_three_routers(unprivileged_lab: Lab):
    if os.environ.get("FASTRELAY_QEMU_RELAY"):
        pytest.skip("the lab runs fastrelay's daemon (--config), which another relay lacks")
    lab = unprivileged_lab
    started = time.monotonic()
    workdir = lab.workdir
    config = workdir / "lab.toml"
    config.write_text(lab_config(os.environ.get("FASTRELAY_LAB_MODE") or None))
    config.chmod(0o644)

    # The daemon runs in workdir, where the config's relative socket paths put the sockets.
    relay = lab.relay("--config", config, cwd=workdir)
    sockets = {seg: workdir / f"seg{seg}.sock" for seg in range(1, 7)}
    for path in sockets.values():
        relay.wait_path(path)
    relay.wait_path(workdir / "control.sock")
    expect_unprivileged("fastrelay", relay.pid, lab)
    if lab.account is not None:
        owners = {p.name: p.stat().st_uid for p in sockets.values()}
        assert set(owners.values()) == {lab.account.uid}, f"socket owners: {owners}"

    guests: dict[str, Guest] = {}
    for name in ("rt1", "rt2", "rt3", "rt4", "h2", "h1"):
        nics = [Nic(nd_stream_unix(sockets[seg]), ip, mac) for seg, ip, mac in NICS[name]]
        env: dict[str, object] = {
            **routing_env(ROUTES[name], forward=name.startswith("rt")),
            "fr_timeout": 300,
        }
        if name == "h1":
            # Waits (up to fr_wait seconds) for the first answer: the routers may still boot.
            env.update(ping_env([guests["h2"]], count=COUNT, wait=90, trace=1))
        else:
            env["fr_action"] = "serve"
        guests[name] = lab.guest(name, nics, env=env)
    for name, g in guests.items():
        expect_unprivileged(f"qemu {name}", g.pid, lab)

    h1, h2 = guests["h1"], guests["h2"]
    expect_clean_pings(h1, [h2], COUNT, timeout=BOOT)
    pinged = time.monotonic()
    for name, g in guests.items():
        expect_wiring(g, NICS[name])
        if name != "h1":
            g.wait_for("^FR-READY serve", 5)

    # The path, from traceroute: the routers of the first path, never rt3.
    (trace,) = h1.wait_results(1, 60, kind="trace")
    assert trace["hops"].split(",") == PATH, f"h1 -> h2 went {trace['hops']}\n{h1.tail()}"

    # Every NIC joined its own segment once (h1 may have powered off already: count joins, not
    # current clients), and the path's segments carried the pings both ways.
    stats = json.loads(query(str(workdir / "control.sock")))
    links = {link["name"]: link for link in stats["links"]}
    switched = re.search(r'(?m)^mode\s*=\s*"switch"', config.read_text()) is not None
    for seg, n in segment_nic_counts().items():
        link = links[f"seg{seg}"]
        (ep,) = link["endpoints"]
        assert ep["connections"] == n, f"seg{seg}: {ep['connections']} NICs, expected {n}: {ep}"
        assert link["mode"] == ("switch" if switched else "hub"), link
        if seg in PATH_SEGMENTS:
            assert ep["rx_frames"] >= 2 * COUNT, f"seg{seg} carried too little: {ep}"
            if switched:
                # The pings went NIC to NIC, each to its one port; every NIC that spoke is
                # in the segment's MAC table (h1's went with it when it powered off: a
                # closed port's MACs are forgotten at once).
                assert ep["unicast"] >= 2 * COUNT, f"seg{seg}: {ep}"
                macs = {row["mac"] for row in link["switch"]["mac_table"]}
                on_path = {mac for name, nics in NICS.items() if name != "h1"
                           for s, _, mac in nics if s == seg}
                assert on_path <= macs, f"seg{seg}: table {sorted(macs)}"
    assert relay.alive(), relay.tail()
    # Shown with -s: the lab's cost on this machine (six TCG guests booting at once).
    print(f"lab: h1 done pinging h2 {pinged - started:.1f}s after the relay started")

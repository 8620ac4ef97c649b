"""Three real guests on a fastrelay switch: the third guest's port gets none of the first two's unicast.

The relay runs as a daemon (its control socket gives the counters, read with
`fastrelay stats --json`) with one switch, `mode = "switch"` (the config form of
`fastrelay --switch -l`), and one TCP listener per guest, so that each guest's port has
counters of its own: for the frames a port received, `unicast` (sent to the one port of
their destination) and `flooded` (to every other port); for what it was sent, `tx_frames`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .harness import (
    Lab,
    expect_clean_pings,
    free_port,
    nd_socket_connect,
    ping_env,
    relay_command,
    tcp_established,
    wait_until,
)

# Four boots (three at once) on two shared cores: more than the default backstop of 120 s.
pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300),
              pytest.mark.usefixtures("fastrelay_cli")]

COUNT = 10
SERVE = {"fr_action": "serve"}


def switch_config(path: Path, control: Path, ports: dict[str, int]) -> None:
    """A daemon config: one switch with a TCP listener per guest, and a control socket."""
    endpoints = ", ".join(f'"listen:127.0.0.1:{p}"' for p in ports.values())
    path.write_text(f'[daemon]\ncontrol = "{control}"\n\n'
                    f'[hub.sw]\nmode = "switch"\nendpoints = [{endpoints}]\n')


def port_counters(control: Path) -> dict[int, dict[str, int]]:
    """Each listener's counters (by TCP port), from `fastrelay stats --json`."""
    res = subprocess.run([*relay_command(), "stats", "--json", "--control", str(control)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    (link,) = json.loads(res.stdout)["links"]
    assert link["mode"] == "switch", link
    return {int(ep["endpoint"].rsplit(":", 1)[1]): ep for ep in link["endpoints"]}


def test_switch_third_guest_port_gets_none_of_the_unicast_between_the_first_two(
        lab: Lab, tmp_path: Path) -> None:
    if os.environ.get("FASTRELAY_QEMU_RELAY"):
        pytest.skip("runs fastrelay's daemon (--config, stats), which another relay lacks")
    ports = {name: free_port() for name in ("a", "b", "c")}
    config, control = tmp_path / "switch.toml", tmp_path / "control.sock"
    switch_config(config, control, ports)
    relay = lab.relay("--config", config)
    for port in ports.values():
        relay.wait_listening(port)
    relay.wait_path(control)

    # c0 is the third guest: on the segment before the others, answering pings but never
    # pinged, so nothing is ever addressed to it. Its port must then be sent exactly the
    # frames that a and b flooded (broadcast ARP and the like), none of their unicast.
    c0 = lab.guest("c0", nd_socket_connect(ports["c"]), env=SERVE)
    wait_until(lambda: tcp_established(ports["c"]) >= 1, 30, "c0 on the switch", c0.tail)
    b = lab.guest("b", nd_socket_connect(ports["b"]), env=SERVE)
    # a pings b, then sleeps (fr_gap) instead of powering off: its port, and its switch
    # counters, stay open, and c pings it later.
    a = lab.guest("a", nd_socket_connect(ports["a"]),
                  env={**ping_env([b], count=COUNT, rounds=2, gap=600), "fr_timeout": 900})
    results = a.wait_results(1, 150)
    assert [(r["round"], r["sent"], r["received"]) for r in results] == \
        [("1", str(COUNT), str(COUNT))], a.tail()

    seen = port_counters(control)
    ea, eb, ec = seen[ports["a"]], seen[ports["b"]], seen[ports["c"]]
    # The pings and their replies went to one port each: the switch knew b's and a's ports.
    assert ea["unicast"] + eb["unicast"] >= 2 * COUNT, (ea, eb)
    # Every frame c's port was sent is one that a or b flooded: none of their unicast.
    assert ec["tx_frames"] == ea["flooded"] + eb["flooded"], (ea, eb, ec)
    assert ec["drop_queue"] == 0, ec

    # Then all three ping each other: the third guest, a new one on c's port, pings a and b.
    c0.kill()
    wait_until(lambda: tcp_established(ports["c"]) == 0, 30, "c0 to leave", c0.tail)
    c = lab.guest("c", nd_socket_connect(ports["c"]), env=ping_env([a, b], count=COUNT))
    expect_clean_pings(c, [a, b], COUNT, timeout=120)
    assert relay.alive(), relay.tail()

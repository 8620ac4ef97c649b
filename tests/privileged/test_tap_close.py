"""Closing a relay releases every queue of a multi-queue tap at once, not at garbage collection."""

from __future__ import annotations

import json
import sys

import pytest

from privileged.netns import Lab

pytestmark = pytest.mark.privileged

# Runs inside the lab's namespace, where the taps are: a Relay in this very process, so
# that its descriptors can be counted in /proc/self/fd. Collection is off and the relay
# stays referenced: whatever is still open after close() is open because close() left it.
_CLOSE_AND_COUNT = """
import asyncio, gc, json, os, sys
import uvloop
from pyroute2 import IPRoute
from fastrelay.relay import Relay, RelayOptions
from fastrelay.targets import parse_target

def tun_fds():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "/dev/net/tun"
        except OSError:
            pass
    return count

def taps():
    # pyroute2 runs a loop of its own: never on the relay's (see endpoints/tap.py).
    with IPRoute() as ipr:
        return sorted(link.get("IFLA_IFNAME") for link in ipr.get_links()
                      if (link.get("IFLA_LINKINFO") or {}).get("IFLA_INFO_KIND") == "tun")

async def main():
    gc.disable()
    relay = Relay([parse_target(sys.argv[1])], RelayOptions(), point_to_point=False)
    before = tun_fds()
    await relay.start()
    running, taps_running = tun_fds(), await asyncio.to_thread(taps)
    await relay.shutdown(0.5)
    print(json.dumps({"before": before, "running": running, "after": tun_fds(),
                      "taps_running": taps_running,
                      "taps_after": await asyncio.to_thread(taps)}))

uvloop.run(main())
"""


def close_and_count(lab: Lab, target: str) -> dict[str, object]:
    result = lab.run(lab.relay_ns, [sys.executable, "-c", _CLOSE_AND_COUNT, target])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def persistent_multi_queue_tap(lab: Lab, name: str) -> None:
    """As `ip tuntap add NAME mode tap multi_queue vnet_hdr`: outlives its users."""
    from pyroute2 import IPRoute

    with IPRoute(netns=lab.relay_ns) as ipr:
        ipr.link("add", ifname=name, kind="tuntap", mode="tap",
                 ifr={"multi_queue": 1, "vnet_hdr": 1, "no_pi": 1})
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


def test_every_queue_of_an_existing_tap_is_closed_with_the_relay(lab: Lab) -> None:
    """D7: tap:NAME,queues=4 holds four descriptors; closing the relay closes all four."""
    persistent_multi_queue_tap(lab, "mq0")
    counts = close_and_count(lab, "tap:mq0,queues=4")
    assert counts["running"] == counts["before"] + 4, counts
    assert counts["after"] == counts["before"], f"queues left open: {counts}"
    assert counts["taps_after"] == ["mq0"], counts   # persistent: the user's, it stays


def test_bridge_tap_is_gone_as_soon_as_the_relay_is_closed(lab: Lab) -> None:
    """D7: the tap a bridge target creates vanishes with its last queue; a queue left open
    keeps it enslaved to the bridge (and a reloaded link would add a second one)."""
    lab.bridge("brq")
    counts = close_and_count(lab, "brq,queues=4")
    assert counts["running"] == counts["before"] + 4, counts
    assert len(counts["taps_running"]) == 1, counts
    assert counts["after"] == counts["before"], f"queues left open: {counts}"
    assert counts["taps_after"] == [], counts

"""Helpers of the switch-mode socket tests: guests with their own MACs, relay stats, RSS."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

from conftest import wait_until
from peers import StreamPeer

from fastrelay.control import query

BROADCAST = b"\xff" * 6
ETHERTYPE = b"\x88\xb5"  # IEEE local experimental: no guest stack reacts to it


def mac(n: int) -> bytes:
    """A locally administered unicast MAC numbered n (02:00:00:..)."""
    return b"\x02\x00" + n.to_bytes(4, "big")


def mac_text(m: bytes) -> str:
    return ":".join(f"{b:02x}" for b in m)


def frame(dst: bytes, src: bytes, seq: int = 0, size: int = 64) -> bytes:
    """An Ethernet frame src -> dst carrying seq, padded to size."""
    head = dst + src + ETHERTYPE + struct.pack(">Q", seq)
    return head + b"\x00" * max(0, size - len(head))


class Guest:
    """A stream client of a relay standing for one guest NIC with its own MAC."""

    def __init__(self, addr: tuple[str, int], n: int) -> None:
        self.mac = mac(n)
        self.peer = StreamPeer.connect(addr)

    def send_to(self, dst: bytes | Guest, seqs: range | list[int]) -> list[bytes]:
        target = dst.mac if isinstance(dst, Guest) else dst
        frames = [frame(target, self.mac, s) for s in seqs]
        self.peer.send(frames)
        return frames

    def recv(self, n: int, timeout: float = 5.0) -> list[bytes]:
        return self.peer.recv(n, timeout)

    def expect_silence(self, wait: float = 0.3) -> None:
        self.peer.expect_silence(wait)


def wait_joined(sender: Guest, others: list[Guest], timeout: float = 5.0) -> None:
    """Broadcast from sender until every other guest got one: all are attached then.

    Each broadcast is read by every guest it reached, so nothing is left pending.
    """
    deadline = time.monotonic() + timeout
    seq = 1 << 40
    while True:
        sender.send_to(BROADCAST, [seq])
        got = []
        for g in others:
            try:
                got.append(g.recv(1, timeout=0.2))
            except AssertionError:
                got.append([])
        if all(got):
            # The earlier probes, each received by whoever was attached then, are read too.
            for g in others:
                while True:
                    try:
                        g.recv(1, timeout=0.1)
                    except AssertionError:
                        break
            return
        if time.monotonic() > deadline:
            raise AssertionError("the guests did not all join the relay")
        seq += 1


def daemon_stats(ctl: str) -> dict[str, dict[str, Any]]:
    """`fastrelay stats` of the daemon at control socket ctl: {link name: link}."""
    doc = json.loads(query(ctl))
    return {link["name"]: link for link in doc["links"]}


def wait_connected(ctl: str, link: str, counts: list[int], timeout: float = 10.0) -> None:
    """Wait until each endpoint of link has the given number of open connections."""
    wait_until(lambda: [e["connected"] for e in daemon_stats(ctl)[link]["endpoints"]] == counts,
               timeout, f"{link}: connections {counts}")


def rss_bytes(pid: int) -> int:
    """Resident set size of process pid."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")

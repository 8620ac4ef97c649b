"""The backlog budget of a link or hub: configured, one per daemon link, counted, and bounding RSS."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from conftest import wait_bound, wait_until
from peers import LOOP4, StreamPeer, free_port, make_frame, track

from fastrelay.config import parse_config
from fastrelay.control import query
from fastrelay.relay import Relay, RelayOptions
from fastrelay.targets import parse_target


def test_queue_total_is_the_relays_budget_unless_one_is_given() -> None:
    from fastrelay._core import QueueBudget

    targets = [parse_target(f"listen:{LOOP4}:{free_port()}")]
    relay = Relay(targets, RelayOptions(queue_total=123_456), point_to_point=False)
    assert relay.budget.limit == 123_456 and relay.hub.budget is relay.budget
    relay.hub.close()
    shared = QueueBudget(4096)
    relay = Relay(targets, RelayOptions(), point_to_point=False, budget=shared)
    assert relay.hub.budget is shared
    relay.hub.close()
    config = parse_config('[defaults]\nqueue_total = "8M"\n[hub.a]\nlisten = "5000"\n'
                          '[hub.b]\nlisten = "5001"\nqueue_total = 65536\n')
    assert config.links["a"].options.relay_options().queue_total == 8 << 20
    assert config.links["b"].options.relay_options().queue_total == 65536


def _metric(text: str, name: str, link: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{link="{link}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for link {link}")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


BUDGET = 16 << 20
# What the daemon may grow by besides the budget while 102 clients are served and
# 20 MB are fanned out to them: Python objects, allocator slack, the hub's buffers.
OVERHEAD = 24 << 20


@pytest.mark.slow
def test_silent_clients_cannot_take_more_than_the_budget(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub, ctl = free_port(), str(tmp_path / "ctl.sock")
    proc = daemon_process(f"""
[daemon]
control = "{ctl}"

[hub.h]
listen = "{LOOP4}:{hub}"
max_clients = 102
queue = "4M"
queue_total = {BUDGET}
""")
    wait_bound(hub, socket.SOCK_STREAM)
    silent = [track(socket.create_connection((LOOP4, hub), timeout=10)) for _ in range(100)]
    for sock in silent:             # small receive buffers: the relay's backlogs fill sooner
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader = track(socket.create_connection((LOOP4, hub), timeout=10))
    sender = StreamPeer(track(socket.create_connection((LOOP4, hub), timeout=10)))
    received = [0]

    def read() -> None:             # one fast reader keeps the hub reading the sender
        reader.settimeout(30)
        try:
            while chunk := reader.recv(1 << 20):
                received[0] += len(chunk)
        except OSError:
            pass
    threading.Thread(target=read, daemon=True).start()
    wait_until(lambda: json.loads(query(ctl))["links"][0]["endpoints"][0]["connected"] == 102,
               10, "102 clients")
    time.sleep(0.3)
    before = _rss_kib(proc.proc.pid)

    frames = [make_frame(1500, i) for i in range(14_000)]     # 21 MB, to 101 clients each
    sender.send(frames)
    sender.flush(60)
    wait_until(lambda: received[0] >= 0.9 * len(frames) * 1504, 30, "the reader's frames")
    time.sleep(0.5)
    grown = (_rss_kib(proc.proc.pid) - before) * 1024
    text = query(ctl, "metrics")
    assert _metric(text, "fastrelay_queue_budget_bytes", "h") == BUDGET
    peak = _metric(text, "fastrelay_queue_budget_peak_bytes", "h")
    assert 0.9 * BUDGET <= peak <= BUDGET + 102 * 70_000      # used up, overdrawn by < a frame
    assert _metric(text, "fastrelay_queue_budget_refused_frames_total", "h") > 0
    budget = json.loads(query(ctl))["links"][0]["queue_budget"]
    assert budget["limit"] == BUDGET and budget["refused_frames"] > 0
    assert grown <= BUDGET + OVERHEAD, f"RSS grew by {grown / 2**20:.1f} MiB"

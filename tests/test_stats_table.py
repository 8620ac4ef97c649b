"""Counters for people: the `fastrelay stats` table, --json, --watch, and -v's per-port lines."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import wait_bound
from peers import LOOP4, DgramPeer, StreamPeer, exchange_windowed, free_port, random_frames, track

from fastrelay.stats_table import HEADER, compact_number, port_lines, render_table


def stats(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastrelay", "stats", *args], check=False,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def table_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """The rows of the first table in text, by (LINK, ENDPOINT), each as {title: cell}.

    The titles give the columns: LINK and ENDPOINT are left-aligned (a cell starts where
    its title starts), the numbers right-aligned (a cell ends where its title ends).
    """
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("LINK "))
    spans, pos = [], 0
    for title in HEADER:
        start = lines[head].index(title, pos)
        spans.append((start, start + len(title)))
        pos = start + len(title)
    rows = {}
    for line in lines[head + 1:]:
        if not line.strip() or line.startswith("fastrelay "):
            break
        cells = {"LINK": line[:spans[1][0]].strip(),
                 "ENDPOINT": line[spans[1][0]:spans[2][0]].strip()}
        state_peers = line[spans[2][0]:spans[3][1]].split()
        cells["STATE"], cells["PEERS"] = state_peers if state_peers else ("", "")
        for (_, end), (_, before), title in zip(spans[4:], spans[3:], HEADER[4:]):
            cells[title] = line[before:end].strip()
        rows[(cells["LINK"], cells["ENDPOINT"])] = cells
    return rows


# -- formatting, from documents as the daemon writes them -----------------------------------

def _doc(uptime: float, rx: int, drops: int, state: str = "up") -> dict[str, object]:
    port = {"name": "tcp client 127.0.0.1:40000", "rx_frames": rx, "rx_bytes": rx * 100,
            "tx_frames": 0, "tx_bytes": 0, "drop_queue": drops, "drop_invalid": 0,
            "drop_send": 0, "queued_bytes": 2048}
    endpoint = {"endpoint": "listen:5000", "name": "tcp listener *:5000", "connected": 1,
                **{k: v for k, v in port.items() if k != "name"}, "ports": [port]}
    return {"version": "9.9", "uptime": uptime,
            "links": [{"name": "lab", "kind": "hub", "state": state, "restarts": 0,
                       "error": None if state == "up" else "port in use",
                       "endpoints": [endpoint]}]}


def test_table_rates_are_growth_over_the_daemons_uptime() -> None:
    text = render_table(_doc(12.5, 3000, 40), _doc(10.5, 1000, 0), verbose=True)
    assert text.splitlines()[0].endswith("1 links and hubs, rates over 2.0 s")
    row = table_rows(text)[("lab (hub)", "listen:5000")]
    assert (row["STATE"], row["PEERS"], row["IN/S"], row["IN B/S"]) == ("up", "1", "1.00k",
                                                                         "100k")
    assert (row["DROP/S"], row["IN"], row["FULL"], row["QUEUED"]) == ("20", "3.00k", "40",
                                                                      "2.05k")
    port = table_rows(text)[("", "\\_ tcp client 127.0.0.1:40000")]
    assert port["IN/S"] == "1.00k" and port["FULL"] == "40"


def test_table_without_rates_after_a_reset_and_with_failures_noted() -> None:
    one = render_table(_doc(10.0, 50, 0))
    assert "no rates (one sample)" in one
    assert table_rows(one)[("lab (hub)", "listen:5000")]["IN/S"] == "-"
    # A link whose definition changed starts from zero: no negative rates.
    reset = render_table(_doc(11.0, 5, 0, state="restarting"), _doc(10.0, 50, 0))
    assert table_rows(reset)[("lab (hub)", "listen:5000")]["IN/S"] == "-"
    assert reset.splitlines()[-1] == "hub lab: restarting: port in use"


def test_port_lines_put_the_lossy_port_first_and_stay_short() -> None:
    before = {f"p{i}": {"rx_bytes": 0, "tx_bytes": 0, "drop_queue": 0} for i in range(12)}
    now = [(f"p{i}", {"rx_bytes": 1000 * i, "tx_bytes": 0, "drop_queue": 0})
           for i in range(12)]
    now[3] = ("p3", {"rx_bytes": 0, "tx_bytes": 0, "drop_queue": 7})
    lines = port_lines(now, before, 1.0, limit=4)
    assert [line.split(":")[0].strip() for line in lines[:4]] == ["p3", "p11", "p10", "p9"]
    assert "dropped 7/s (total 7: queue full 7" in lines[0]
    assert lines[4] == "  ... and 8 more ports, quieter"
    # The first report has no earlier sample: the totals rank the ports.
    first = port_lines(now, None, 1.0, limit=2)
    assert [line.split(":")[0].strip() for line in first[:2]] == ["p3", "p11"]
    assert "dropped 0/s (total 7: queue full 7" in first[0]


# -- against a running daemon ----------------------------------------------------------------

def _daemon_config(ctl: str, listen: int, lport: int, sport: int) -> str:
    return f"""\
[daemon]
control = "{ctl}"

[hub.lab]
listen = "127.0.0.1:{listen}"
endpoints = ["{lport}::{sport}"]
queue = "64k"
"""


def _lossy_hub(listen: int, lport: int, udp: DgramPeer) -> tuple[int, int]:
    """A fast and a slow client on the hub; udp sends through it. (fast, slow) local ports.

    The slow client never reads and has a tiny receive buffer, so its port's 64k queue
    fills and the frames meant for it drop (queue full); the fast one gets every frame.
    """
    fast = StreamPeer.connect((LOOP4, listen))
    slow = track(socket.socket())
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((LOOP4, listen))
    udp.peer = (LOOP4, lport)
    hello = random_frames(1, 60, 60, seed=1)
    for _ in range(100):  # until both clients are attached: fast then sees the hello
        udp.send(hello)
        try:
            fast.recv(1, timeout=0.1)
            break
        except AssertionError:
            continue
    time.sleep(0.2)
    frames = random_frames(5000, 1000, 1400, seed=5)
    assert exchange_windowed(udp.send, lambda n: fast.recv(n, timeout=10), frames) == frames
    return fast.sock.getsockname()[1], slow.getsockname()[1]


def test_stats_table_and_json_against_the_daemon(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    listen, lport = free_port(), free_port(kind=socket.SOCK_DGRAM)
    udp = DgramPeer()
    daemon_process(_daemon_config(ctl, listen, lport, udp.port))
    wait_bound(lport, socket.SOCK_DGRAM)
    client = StreamPeer.connect((LOOP4, listen))
    udp.peer = (LOOP4, lport)
    frame = random_frames(1, 500, 500, seed=2)

    # A steady trickle while `stats` takes its two samples, so the rates are not zero.
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            udp.send(frame * 10)
            time.sleep(0.02)
    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        result = stats("--control", ctl)
    finally:
        stop.set()
        sender.join(5)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert set(rows) == {("lab (hub)", f"listen:127.0.0.1:{listen}"),
                         ("lab (hub)", f"{lport}::{udp.port}")}
    sent = rows[("lab (hub)", f"{lport}::{udp.port}")]
    assert sent["STATE"] == "up" and sent["PEERS"] == "1"
    assert 50 <= float(sent["IN/S"]) <= 1000   # 500 frames/s sent, give or take the pace
    assert sent["OUT"] == "0" and sent["FULL"] == "0"
    clients = rows[("lab (hub)", f"listen:127.0.0.1:{listen}")]
    assert clients["PEERS"] == "1" and float(clients["OUT/S"]) > 0

    # --json is the daemon's own document, counters as the table shows them.
    client.recv(1)  # the client is served
    time.sleep(0.1)
    doc = json.loads(stats("--control", ctl, "--json").stdout)
    link = doc["links"][0]
    assert (link["name"], link["kind"], link["state"]) == ("lab", "hub", "up")
    received = link["endpoints"][1]["rx_frames"]
    assert received >= 50
    again = table_rows(stats("--control", ctl).stdout)[("lab (hub)", f"{lport}::{udp.port}")]
    assert again["IN"] == compact_number(received)
    assert again["IN/S"] == "0"  # the trickle stopped


def test_stats_watch_redraws_count_times(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    daemon_process(_daemon_config(ctl, free_port(), free_port(kind=socket.SOCK_DGRAM), 9))
    began = time.monotonic()
    result = stats("--control", ctl, "--watch", "0.2", "--count", "3")
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    frames = result.stdout.split("\n\n")  # not a terminal: tables follow one another
    assert len(frames) == 3
    assert "no rates (one sample)" in frames[0]
    assert all("rates over 0.2 s" in f for f in frames[1:])
    assert took < 10


def test_stats_verbose_shows_which_client_loses_frames(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    listen, lport = free_port(), free_port(kind=socket.SOCK_DGRAM)
    udp = DgramPeer()
    daemon_process(_daemon_config(ctl, listen, lport, udp.port))
    wait_bound(lport, socket.SOCK_DGRAM)
    fast, slow = _lossy_hub(listen, lport, udp)
    rows = table_rows(stats("--control", ctl, "-v").stdout)
    fast_row = rows[("", f"\\_ tcp client 127.0.0.1:{fast}")]
    slow_row = rows[("", f"\\_ tcp client 127.0.0.1:{slow}")]
    assert fast_row["FULL"] == "0" and fast_row["OUT"] == "5.00k"
    assert slow_row["FULL"] != "0"
    # The endpoint's row adds its two clients up.
    listener = rows[("lab (hub)", f"listen:127.0.0.1:{listen}")]
    assert listener["PEERS"] == "2" and listener["FULL"] == slow_row["FULL"]


def test_relay_v_prints_a_line_per_port(relay_process) -> None:  # type: ignore[no-untyped-def]
    listen, lport = free_port(), free_port(kind=socket.SOCK_DGRAM)
    udp = DgramPeer()
    proc = relay_process("-v", "--queue", "64k", "-l", f"127.0.0.1:{listen}",
                         f"{lport}::{udp.port}")
    wait_bound(lport, socket.SOCK_DGRAM)
    fast, slow = _lossy_hub(listen, lport, udp)
    time.sleep(1.5)  # one more report, after the traffic
    lines = proc.stderr.splitlines()

    def last(name: str) -> str:
        found = [line for line in lines if line.startswith(f"fastrelay:   {name}: ")]
        assert found, f"no -v line for {name}:\n" + "\n".join(lines)
        return found[-1]
    slow_line = last(f"tcp client 127.0.0.1:{slow}")
    dropped = int(re.search(r"queue full (\d+)", slow_line).group(1))  # type: ignore[union-attr]
    assert dropped > 0
    assert "(total 0: queue full 0," in last(f"tcp client 127.0.0.1:{fast}")
    assert "(total 0:" in last(f"udp 127.0.0.1:{udp.port} (local port {lport})")


@pytest.mark.parametrize("args, text", [
    (["stats", "--json", "--prometheus"], "--json and --prometheus: choose one"),
    (["stats", "--count", "2"], "--count N goes with --watch"),
    (["stats", "--watch", "0"], "the interval must be within 0.1..3600 s"),
    (["-l", "5000", "--json"], "--json: only with `fastrelay stats`"),
    (["127.0.0.1:1", "127.0.0.1:2", "--watch"], "--watch: only with `fastrelay stats`"),
])
def test_stats_usage_errors(args: list[str], text: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fastrelay", *args], check=False,
                            capture_output=True, text=True, timeout=20,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert text in result.stderr


def test_stats_watch_on_a_terminal_redraws_in_place(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import pty

    ctl = str(tmp_path / "ctl.sock")
    daemon_process(_daemon_config(ctl, free_port(), free_port(kind=socket.SOCK_DGRAM), 9))
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "fastrelay", "stats", "--control", ctl,
                               "--watch", "0.2", "--count", "2"], check=False, stdout=slave,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=20)
        assert proc.returncode == 0, proc.stderr
        # The program has exited: everything it wrote waits in the terminal's buffer.
        os.set_blocking(master, False)
        out = b""
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except BlockingIOError:
                break
            out += chunk
    finally:
        os.close(slave)
        os.close(master)
    # Each table starts by going home and clearing the screen, as top and watch do.
    tables = out.decode().split("\x1b[H\x1b[2J")
    assert tables[0] == "" and len(tables) == 3
    assert all("LINK " in t for t in tables[1:])

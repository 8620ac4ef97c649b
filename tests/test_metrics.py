"""Metrics: the daemon's Prometheus text and JSON, rendered and served (HTTP, control socket)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from peers import LOOP4, StreamListener, free_port, random_frames

from fastrelay.metrics import CONTENT_TYPE, render_prometheus
from fastrelay.stats import EndpointStats, LinkStats

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)\Z")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> tuple[Samples, dict[str, str]]:
    """Parse the text exposition format strictly: (samples, family -> type).

    Fails on a sample whose family has no TYPE line before it, a family declared twice or
    split in two, a malformed label set, a value that is not a number, or a duplicate.
    """
    assert text.endswith("\n"), "the exposition must end with a newline"
    samples: Samples = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    current = None
    done: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"line {number}: second HELP for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"line {number}: second TYPE for {name}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            if current is not None:
                done.add(current)
            types[name] = kind
            current = name
            continue
        assert not line.startswith("#") and line, f"line {number}: unexpected {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"line {number}: not a sample: {line!r}"
        name, labeltext, value = m.groups()
        assert name == current and name not in done, f"line {number}: {name} outside its family"
        labels: dict[str, str] = {}
        rest = labeltext or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"line {number}: bad labels {rest!r}"
            labels[lm.group(1)] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)],
                                         lm.group(2))
            rest = rest[lm.end():]
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"line {number}: duplicate sample"
        samples[key] = float(value)
        if types[name] == "counter":
            assert name.endswith("_total"), f"counter {name} should end in _total"
            assert samples[key] >= 0
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _endpoint(label: str, **counters: int) -> EndpointStats:
    stats = EndpointStats(label, f"tcp {label}")
    for k, v in counters.items():
        if k in stats.counters:
            stats.counters[k] = v
        else:
            setattr(stats, k, v)
    return stats


def test_render_is_valid_exposition_with_escaped_labels() -> None:
    odd = 'unix:/tmp/a "b"\\c\nd'
    links = [
        LinkStats("lab1", "link", "up", 0, None,
                  [_endpoint("127.0.0.1:5001", rx_frames=10, tx_frames=7, reconnects=2,
                             drop_queue=3, connected=1),
                   _endpoint(odd, rx_frames=7, tx_frames=10)]),
        LinkStats("hub", "hub", "restarting", 4, "cannot listen", [_endpoint("listen:5000")],
                  batch_waits=17),
    ]
    samples, types = parse_prometheus(render_prometheus(links))
    assert value(samples, "fastrelay_received_frames_total", link="lab1",
                 endpoint="127.0.0.1:5001") == 10
    assert value(samples, "fastrelay_received_frames_total", link="lab1", endpoint=odd) == 7
    assert value(samples, "fastrelay_dropped_frames_total", link="lab1",
                 endpoint="127.0.0.1:5001", reason="queue_full") == 3
    assert value(samples, "fastrelay_reconnects_total", link="lab1",
                 endpoint="127.0.0.1:5001") == 2
    assert value(samples, "fastrelay_peers_connected", link="lab1",
                 endpoint="127.0.0.1:5001") == 1
    assert value(samples, "fastrelay_link_up", link="lab1", kind="link") == 1
    assert value(samples, "fastrelay_link_up", link="hub", kind="hub") == 0
    assert value(samples, "fastrelay_link_restarts_total", link="hub") == 4
    assert value(samples, "fastrelay_link_batch_waits_total", link="hub") == 17
    assert value(samples, "fastrelay_link_batch_waits_total", link="lab1") == 0
    # 10 read from one side, 10 sent by the other: nothing lost; 7 and 7 likewise.
    assert value(samples, "fastrelay_link_unforwarded_frames_total", link="lab1") == 0
    assert types["fastrelay_peers_connected"] == "gauge"
    assert types["fastrelay_sent_bytes_total"] == "counter"


def test_render_without_links_declares_families() -> None:
    samples, types = parse_prometheus(render_prometheus([]))
    assert "fastrelay_received_frames_total" in types
    assert value(samples, "fastrelay_build_info", version=__import__("fastrelay").__version__) == 1


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_endpoint_scraped_and_parsed(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    la, lb = StreamListener(), StreamListener()
    mport = free_port()
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(f"""
[daemon]
metrics = "{LOOP4}:{mport}"
control = "{ctl}"

[link."lab-1"]
endpoints = ["{LOOP4}:{la.port}", "{LOOP4}:{lb.port}"]

[hub.h]
listen = "{LOOP4}:{free_port()}"
""")
    a, b = la.accept(), lb.accept()
    frames = random_frames(300, 60, 1500, seed=11)
    for i in range(0, len(frames), 60):  # five bursts: each one waited on (batch wait)
        a.send(frames[i:i + 60])
        time.sleep(0.02)
    assert b.recv(len(frames)) == frames
    base = f"http://{LOOP4}:{mport}"

    status, ctype, text = _get(base + "/metrics")
    assert status == 200 and ctype == CONTENT_TYPE
    samples, _ = parse_prometheus(text)
    ea, eb = f"{LOOP4}:{la.port}", f"{LOOP4}:{lb.port}"
    assert value(samples, "fastrelay_received_frames_total", link="lab-1", endpoint=ea) == 300
    assert value(samples, "fastrelay_received_bytes_total", link="lab-1",
                 endpoint=ea) == sum(map(len, frames))
    assert value(samples, "fastrelay_sent_frames_total", link="lab-1", endpoint=eb) == 300
    assert value(samples, "fastrelay_peers_connected", link="lab-1", endpoint=eb) == 1
    assert value(samples, "fastrelay_connections_total", link="lab-1", endpoint=eb) == 1
    assert value(samples, "fastrelay_link_up", link="h", kind="hub") == 1
    # Each burst is a round of 16 frames or more, then one that found little, then a wait
    # (the stream may go on), unless those rounds used up the poll's 1 ms budget: the
    # link's hub waited at least once.
    waits = value(samples, "fastrelay_link_batch_waits_total", link="lab-1")
    assert waits >= 1

    status, ctype, body = _get(base + "/stats")
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    link = next(link for link in doc["links"] if link["name"] == "lab-1")
    assert link["state"] == "up" and link["endpoints"][0]["rx_frames"] == 300
    assert link["batch_waits"] >= waits
    assert link["endpoints"][1]["ports"][0]["tx_frames"] == 300

    assert _get(base + "/nope")[0] == 404
    status, _, body = _get(base + "/metrics", method="HEAD")
    assert status == 200 and body == ""
    assert _get(base + "/metrics", method="POST")[0] == 405

    # `fastrelay stats`, through the control socket, by path and through the config file.
    out = subprocess.run([sys.executable, "-m", "fastrelay", "stats", "--control", ctl,
                          "--json"], capture_output=True, timeout=20, check=True).stdout
    assert json.loads(out)["links"][0]["endpoints"][0]["rx_frames"] == 300
    out = subprocess.run([sys.executable, "-m", "fastrelay", "stats", "--config", proc.config,
                          "--prometheus"], capture_output=True, timeout=20, check=True).stdout
    samples, _ = parse_prometheus(out.decode())
    assert value(samples, "fastrelay_sent_frames_total", link="lab-1", endpoint=eb) == 300


def test_stats_without_a_daemon_says_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "none.sock")
    run = subprocess.run([sys.executable, "-m", "fastrelay", "stats", "--control", ctl],
                         capture_output=True, text=True, timeout=20, check=False)
    assert run.returncode == 1
    assert f"cannot reach the daemon at {ctl}" in run.stderr


def test_control_socket_rejects_unknown_command(daemon_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = str(tmp_path / "ctl.sock")
    # (A config must run something: a hub on a free port.)
    daemon_process(f'[daemon]\ncontrol = "{ctl}"\n[hub.h]\nlisten = "{LOOP4}:{free_port()}"\n')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(ctl)
        s.sendall(b"reboot\n")
        answer = s.makefile().read()
    assert "unknown command" in json.loads(answer)["error"]


def test_metrics_listener_in_use_fails_start(daemon_process) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind((LOOP4, 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = daemon_process(f'[daemon]\nmetrics = "{LOOP4}:{port}"\n'
                              f'[hub.h]\nlisten = "{LOOP4}:{free_port()}"\n', ready=False)
        assert proc.wait(20) == 1
    assert f"metrics listener {LOOP4}:{port}: cannot listen" in proc.log

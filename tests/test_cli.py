"""The command line: every error path gives one clear line and a non-zero status."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from peers import LOOP4, StreamPeer, free_port, make_frame, track


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastrelay", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastrelay: ")
    return lines[0]


@pytest.mark.parametrize("args, status, text", [
    (["nonsense target", "127.0.0.1:1"], 2, "bad target 'nonsense target'"),
    (["127.0.0.1:99999", "-"], 2, "'99999' is not a port number"),
    (["::1:5000", "-"], 2, "[brackets]"),
    (["-l", "x:y:z"], 2, "bad target 'x:y:z'"),
    (["br0,queues=x", "127.0.0.1:1"], 2, "unknown tap option 'queues=x'"),
    # Only looked up, never created: a name that cannot exist here.
    (["no-such-br.9", "127.0.0.1:1"], 1, "no interface named 'no-such-br.9'"),
    (["tap:no-such-tap.9", "127.0.0.1:1"], 1, "no interface named 'no-such-tap.9'"),
])
def test_usage_errors(args: list[str], status: int, text: str) -> None:
    result = run(*args)
    assert result.returncode == status
    assert text in one_line(result)


def test_point_to_point_needs_two_targets() -> None:
    result = run("127.0.0.1:1")
    assert result.returncode == 2
    assert "point to point needs exactly two targets" in result.stderr


def test_connection_refused() -> None:
    port = free_port()
    result = run(f"{LOOP4}:{port}", f"{LOOP4}:{port}")
    assert result.returncode == 1
    assert one_line(result) == f"fastrelay: tcp {LOOP4}:{port}: cannot connect: Connection refused"


def test_udp_port_in_use() -> None:
    busy = track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    busy.bind(("0.0.0.0", 0))
    port = busy.getsockname()[1]
    result = run(f"{port}:{LOOP4}:9", f"{free_port()}:{LOOP4}:9")
    assert result.returncode == 1
    assert f"cannot bind UDP port {port}: Address already in use" in one_line(result)


def test_listen_port_in_use() -> None:
    busy = track(socket.socket())
    busy.bind((LOOP4, 0))
    busy.listen()
    port = busy.getsockname()[1]
    result = run("-l", f"{LOOP4}:{port}")
    assert result.returncode == 1
    assert "cannot listen: Address already in use" in one_line(result)


def test_unresolvable_host() -> None:
    result = run("no-such-host.invalid:5000", "-")
    assert result.returncode == 1
    assert "cannot resolve 'no-such-host.invalid'" in one_line(result)


def test_stdin_that_cannot_be_watched() -> None:
    # /dev/null cannot be polled: say so instead of spinning or crashing.
    result = run("-", f"{free_port()}:{LOOP4}:9")
    assert result.returncode == 1
    assert "stdin must be a pipe" in one_line(result)


def test_help_documents_every_form() -> None:
    result = run("--help")
    assert result.returncode == 0
    for form in ("LPORT:HOST:SPORT", "HOST:PORT", "[V6ADDR]:PORT", "listen:", "unix:PATH",
                 "unix-listen:PATH", "unixgram:LOCAL:REMOTE", "tap:NAME", "BRIDGE",
                 "-netdev socket,id=n0,udp=", "-netdev stream", "-netdev dgram", "-l LISTEN"):
        assert form in result.stdout, form


def test_no_arguments_runs_a_loopback_hub(relay_process) -> None:  # type: ignore[no-untyped-def]
    from fastrelay.defaults import DEFAULT_HUB_HOST, DEFAULT_HUB_PORT

    probe = socket.socket()
    try:
        probe.bind((DEFAULT_HUB_HOST, DEFAULT_HUB_PORT))
    except OSError:
        pytest.skip(f"port {DEFAULT_HUB_PORT} is taken on this machine")
    finally:
        probe.close()
    relay_process()
    a = StreamPeer.connect((DEFAULT_HUB_HOST, DEFAULT_HUB_PORT))
    b = StreamPeer.connect((DEFAULT_HUB_HOST, DEFAULT_HUB_PORT))
    frame = make_frame(100)
    for _ in range(50):  # b may join a moment after a
        a.send([frame])
        try:
            assert b.recv(1, timeout=0.1) == [frame]
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("no frame crossed the default hub")


def test_verbose_prints_counters(relay_process) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = relay_process("-v", "-l", f"{LOOP4}:{port}")
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    import time
    time.sleep(0.2)
    a.send([make_frame(100)] * 10)
    b.recv(10)
    time.sleep(1.3)
    err = proc.stderr
    assert "ports 2" in err and "total 10 fr" in err, err
    assert err.count("\n") <= 4  # at most once a second, not per frame


def test_vv_logs_connections(relay_process) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = relay_process("-vv", "-l", f"{LOOP4}:{port}")
    a = StreamPeer.connect((LOOP4, port))
    b = StreamPeer.connect((LOOP4, port))
    a.send([make_frame(60)])
    assert len(b.recv(1)) == 1
    a.close()
    import time
    time.sleep(0.5)
    err = proc.stderr
    assert "tcp client 127.0.0.1:" in err and "attached" in err and "closed by peer" in err, err

"""The daemon's control surface under bad input: reloads always end READY, requests never crash."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket

import pytest
from peers import LOOP4, free_port, track

from fastrelay.config import parse_config
from fastrelay.daemon import Daemon


def test_reload_that_fails_in_any_way_still_ends_ready(monkeypatch, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    # The reload task died after RELOADING=1 on any unexpected exception, so systemd saw
    # the unit reloading for ever and the next `systemctl reload` waited in vain.
    notify = track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    path = tmp_path / "fastrelay.toml"
    path.write_text(f'[hub.h]\nlisten = "{LOOP4}:{free_port()}"\n')
    config = parse_config(path.read_text(), str(path))

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        daemon = Daemon(config)
        running = loop.create_task(daemon.run())
        seen: list[str] = []

        async def expect(state: str) -> None:
            while True:
                message = (await asyncio.wait_for(loop.sock_recv(notify, 4096), 5)).decode()
                seen.append(message)
                if state in message.split("\n"):
                    return
        try:
            await expect("READY=1")

            async def broken(*args: object) -> None:
                raise RuntimeError("injected")
            monkeypatch.setattr(daemon, "_apply_links", broken)
            await daemon.reload()
            await expect("READY=1")
        finally:
            daemon.stop()
            await asyncio.wait_for(running, 10)
        return seen

    with caplog.at_level(logging.INFO, logger="fastrelay"):
        seen = asyncio.run(main())
    assert any("RELOADING=1" in m for m in seen)
    assert seen[-1].startswith("READY=1")
    failed = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert "RuntimeError: injected" in failed[0].getMessage()


def test_sighup_with_a_file_nested_too_deep_is_refused_and_ends_ready(daemon_process) -> None:  # type: ignore[no-untyped-def]
    proc = daemon_process(f'[hub.h]\nlisten = "{LOOP4}:{free_port()}"\n')
    with open(proc.config, "a") as f:
        f.write("x = " + "[" * 5000 + "]" * 5000 + "\n")
    proc.signal(signal.SIGHUP)
    proc.expect_notify("READY=1")
    assert "nested too deeply" in proc.wait_log("reload refused")
    assert "Traceback" not in proc.log


@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_control_request_over_64k_is_answered_with_an_error(daemon_process, tmp_path,  # type: ignore[no-untyped-def]
                                                            size: int) -> None:
    ctl = str(tmp_path / "ctl.sock")
    proc = daemon_process(f'[daemon]\ncontrol = "{ctl}"\n'
                          f'[hub.h]\nlisten = "{LOOP4}:{free_port()}"\n')
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(ctl)
            try:
                s.sendall(b"x" * size)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before all of it was sent
            answer = s.makefile("rb").read()
        assert "longer than" in json.loads(answer)["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(ctl)
        s.sendall(b"stats\n")
        assert "links" in json.loads(s.makefile("rb").read())
    assert "Traceback" not in proc.log and "Error" not in proc.log, proc.log


def test_metrics_request_too_long_or_broken_gets_no_traceback(daemon_process) -> None:  # type: ignore[no-untyped-def]
    mport = free_port()
    proc = daemon_process(f'[daemon]\nmetrics = "{LOOP4}:{mport}"\n'
                          f'[hub.h]\nlisten = "{LOOP4}:{free_port()}"\n')
    for request in (b"GET /" + b"x" * 40_000 + b" HTTP/1.0\r\n\r\n", b"\x00\xff junk\n\n",
                    b"GET /metrics HTTP/1.0\r\n"):   # the last one never ends its head
        with socket.create_connection((LOOP4, mport), timeout=10) as s:
            try:
                s.sendall(request)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            head = s.makefile("rb").read().split(b"\r\n", 1)[0]
        assert head == b"" or head.startswith((b"HTTP/1.0 400 ", b"HTTP/1.0 405 ")), head
    with socket.create_connection((LOOP4, mport), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert s.makefile("rb").read().startswith(b"HTTP/1.0 200 OK")
    assert "Traceback" not in proc.log, proc.log

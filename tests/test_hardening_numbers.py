"""Malformed command lines and config files: one clear line each, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A hub that would be valid on its own: every case below breaks exactly one thing.
HUB = '[hub.h]\nlisten = "127.0.0.1:5999"\n'
LISTEN = ["-l", "127.0.0.1:5999"]

CLI_CASES = [
    ("queue-inf", ["--queue", "inf", *LISTEN], "--queue"),
    ("queue-nan", ["--queue", "nan", *LISTEN], "--queue"),
    ("queue-1e30", ["--queue", "1e30", *LISTEN], "--queue"),
    ("queue-2**64", ["--queue", "10000000000000000000", *LISTEN], "--queue"),
    ("queue-negative", ["--queue", "-1", *LISTEN], "--queue"),
    ("queue-over-cap", ["--queue", "2G", *LISTEN], "--queue"),
    ("queue-empty", ["--queue", "", *LISTEN], "--queue"),
    ("queue-total-inf", ["--queue-total", "inf", *LISTEN], "--queue-total"),
    ("queue-total-over-cap", ["--queue-total", "100G", *LISTEN], "--queue-total"),
    ("max-frame-inf", ["--max-frame", "inf", *LISTEN], "--max-frame"),
    ("max-frame-huge", ["--max-frame", "10000000000000000000", *LISTEN], "--max-frame"),
    ("max-frame-zero", ["--max-frame", "0", *LISTEN], "--max-frame"),
    ("reconnect-initial-nan", ["--reconnect-initial", "nan", *LISTEN], "--reconnect-initial"),
    ("reconnect-initial-inf", ["--reconnect-initial", "inf", *LISTEN], "--reconnect-initial"),
    ("reconnect-initial-zero", ["--reconnect-initial", "0", *LISTEN], "--reconnect-initial"),
    ("reconnect-max-inf", ["--reconnect-max", "inf", *LISTEN], "--reconnect-max"),
    ("reconnect-max-1e30", ["--reconnect-max", "1e30", *LISTEN], "--reconnect-max"),
    ("reconnect-max-below-initial",
     ["--reconnect-initial", "2", "--reconnect-max", "1", *LISTEN], "--reconnect-max"),
    ("max-clients-zero", ["--max-clients", "0", *LISTEN], "--max-clients"),
    ("max-clients-negative", ["--max-clients", "-3", *LISTEN], "--max-clients"),
    ("max-clients-float", ["--max-clients", "1e3", *LISTEN], "--max-clients"),
    ("max-clients-huge", ["--max-clients", "10000000000000000000", *LISTEN], "--max-clients"),
    ("binary-target", [os.fsdecode(b"\xff\xfe\x01junk"), "127.0.0.1:1"],
     "not a valid interface name"),
    ("unknown-option", ["--frobnicate", *LISTEN], "--frobnicate"),
]

CONFIG_CASES = [
    ("toml-queue-inf-string", HUB + 'queue = "inf"\n', "hub.h.queue"),
    ("toml-queue-inf-float", HUB + "queue = inf\n", "hub.h.queue"),
    ("toml-queue-nan", "[defaults]\nqueue = nan\n" + HUB, "defaults.queue"),
    ("toml-queue-2**64", HUB + "queue = 10000000000000000000\n", "hub.h.queue"),
    ("toml-queue-1e30-string", HUB + 'queue = "1e30"\n', "hub.h.queue"),
    ("toml-queue-negative", HUB + "queue = -1\n", "hub.h.queue"),
    ("toml-queue-total-nan", HUB + 'queue_total = "nan"\n', "hub.h.queue_total"),
    ("toml-queue-total-bool", "[defaults]\nqueue_total = true\n" + HUB, "defaults.queue_total"),
    ("toml-reconnect-initial-nan", "[defaults]\nreconnect_initial = nan\n" + HUB,
     "defaults.reconnect_initial"),
    ("toml-reconnect-max-inf", "[defaults]\nreconnect_max = inf\n" + HUB,
     "defaults.reconnect_max"),
    ("toml-connect-timeout-nan", HUB + "connect_timeout = nan\n", "hub.h.connect_timeout"),
    ("toml-stop-timeout-nan", "[daemon]\nstop_timeout = nan\n" + HUB, "daemon.stop_timeout"),
    ("toml-reconnect-factor-huge", HUB + "reconnect_factor = 1e30\n",
     "hub.h.reconnect_factor"),
    ("toml-reconnect-initial-zero", HUB + "reconnect_initial = 0\n",
     "hub.h.reconnect_initial"),
    ("toml-max-frame-float", HUB + "max_frame = 1e30\n", "hub.h.max_frame"),
    ("toml-max-clients-zero", HUB + "max_clients = 0\n", "hub.h.max_clients"),
    ("toml-max-clients-huge", HUB + "max_clients = 10000000000000000000\n",
     "hub.h.max_clients"),
    ("toml-deep-array", HUB + "x = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("toml-empty-file", "", "no [link.NAME] or [hub.NAME]"),
    ("toml-daemon-only", '[daemon]\nstop_timeout = 1.0\n', "no [link.NAME] or [hub.NAME]"),
    ("toml-newline-in-key", HUB + '"bad\\nkey" = 1\n', "unknown key"),
    ("toml-nul-in-text", HUB + "\0\n", "TOML syntax"),
]


def _run(args: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "fastrelay", *args], check=False,
                              capture_output=True, text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{args}: accepted, the relay kept running "
                             f"(stderr: {exc.stderr!r})") from None


def _one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode not in (0, None), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert expected in lines[0], lines[0]
    assert len(lines[0]) < 300, lines[0]
    return lines[0]


@pytest.mark.parametrize("args, expected", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_malformed_command_line(args: list[str], expected: str) -> None:
    line = _one_clear_line(_run(args), expected)
    assert line.startswith("fastrelay: ")


@pytest.mark.parametrize("text, expected", [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_malformed_config(tmp_path, text: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    line = _one_clear_line(_run(["--check", str(path)]), expected)
    assert line.startswith(f"{path}:")


@pytest.mark.parametrize("text", ["junk", "deep", "queue"])
def test_malformed_config_never_starts_the_daemon(tmp_path, text: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    data = {"junk": os.urandom(4096).replace(b"\n", b"\x00") + b"\xff",
            "deep": (HUB + "x = " + "[" * 5000 + "]" * 5000 + "\n").encode(),
            "queue": (HUB + 'queue = "inf"\n').encode()}[text]
    path.write_bytes(data)
    line = _one_clear_line(_run(["--config", str(path)]), "")
    assert line.startswith(f"{path}:")

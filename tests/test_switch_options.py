"""Switch mode's options: --switch, ,trunk, mode and the MAC table knobs; bad input, one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastrelay.config import parse_config
from fastrelay.targets import TCPListenTarget, TCPTarget, parse_listen

HUB = '[hub.h]\nlisten = "127.0.0.1:5999"\n'
LINK = '[link.l]\nendpoints = ["127.0.0.1:5001", "127.0.0.1:5002"]\n'

# (id, command line or config text, what its one line says: for a config, the whole line
# after the file name ("LINE: key: why..."); for a command line, a part of it).
BAD_INPUT: list[tuple[str, list[str] | str, str]] = [
    ("unknown-target-option", ["-l", "5999", "127.0.0.1:5000,fast"],
     "bad target '127.0.0.1:5000,fast': unknown target option 'fast'"),
    ("tap-option-on-tcp", ["-l", "5999,queues=2"],
     "option 'queues=2' is for tap and bridge targets only"),
    ("trunk-on-stdio", ["-l", "5999", "-,trunk"],
     "bad target '-,trunk': stdio ('-') takes no options"),
    ("mac-age-zero", ["--switch", "--mac-age", "0", "-l", "5999"],
     "argument --mac-age: 0 is out of range (1..86400)"),
    ("mac-age-huge", ["--mac-age", "1e9", "-l", "5999"],
     "argument --mac-age: 1e+09 is out of range (1..86400)"),
    ("mac-age-nan", ["--mac-age", "nan", "-l", "5999"],
     "argument --mac-age: nan is out of range"),
    ("table-size-small", ["--mac-table-size", "8", "-l", "5999"],
     "argument --mac-table-size: 8 is out of range (16..1048576)"),
    ("loop-threshold-zero", ["--loop-threshold", "0", "-l", "5999"],
     "argument --loop-threshold: 0 is out of range (1..10000)"),
    ("switch-point-to-point", ["--switch", "127.0.0.1:1", "127.0.0.1:2"],
     "--switch: point to point forwards everything between its two sides"),
    ("mac-age-point-to-point", ["--mac-age", "10", "127.0.0.1:1", "127.0.0.1:2"],
     "--mac-age: point to point forwards everything"),
    ("trunk-point-to-point", ["127.0.0.1:1,trunk", "127.0.0.1:2"],
     "'127.0.0.1:1,trunk': ',trunk' is for the hub form"),
    ("switch-with-config", ["--config", "/nonexistent.toml", "--switch"],
     "--switch: with --config, set link options in the file"),
    ("mode-typo", HUB + 'mode = "swich"\n',
     ":3: hub.h.mode: must be \"hub\" or \"switch\", not 'swich'"),
    ("mode-not-a-string", HUB + "mode = 1\n",
     ":3: hub.h.mode: must be \"hub\" or \"switch\", not an integer"),
    ("mode-on-a-link", LINK + 'mode = "switch"\n',
     ":3: link.l.mode: a link (point to point) takes no mode"),
    ("mac-age-on-a-link", LINK + "mac_age = 10\n",
     ":3: link.l.mac_age: a link (point to point) takes no switch option"),
    ("mac-age-zero-in-config", HUB + "mac_age = 0\n",
     ":3: hub.h.mac_age: 0 is out of range (1..86400)"),
    ("table-size-in-defaults", "[defaults]\nmac_table_size = 1e9\n" + HUB,
     ":2: defaults.mac_table_size: must be an integer"),
    ("loop-hold-inf", HUB + "loop_hold = inf\n",
     ":3: hub.h.loop_hold: inf is out of range (0.1..3600)"),
    ("unknown-option-in-config", HUB + 'endpoints = ["127.0.0.1:5000,fast"]\n',
     ":3: hub.h.endpoints[0]: unknown target option 'fast'"),
    ("unknown-option-on-listen", '[hub.h]\nlisten = "5999,fast"\n',
     ":2: hub.h.listen: unknown target option 'fast'"),
    ("trunk-on-a-link", '[link.l]\nendpoints = [\n  "127.0.0.1:1",\n  "127.0.0.1:2,trunk",\n]\n',
     ":4: link.l.endpoints[1]: ',trunk' is for hubs"),
]


@pytest.mark.parametrize("given, text", [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_clear_line(tmp_path: Path, given: list[str] | str, text: str) -> None:
    if isinstance(given, str):
        path = tmp_path / "bad.toml"
        path.write_text(given)
        args = ["--check", str(path)]
    else:
        args = given
    result = subprocess.run([sys.executable, "-m", "fastrelay", *args], capture_output=True,
                            text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode not in (0, None), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    if isinstance(given, str):
        assert lines[0].startswith(f"{path}{text}"), lines[0]   # FILE:LINE: key: why
    else:
        assert lines[0].startswith("fastrelay: ") and text in lines[0], lines[0]


def test_config_switch_options_reach_the_relay() -> None:
    config = parse_config("[defaults]\nmac_age = 60\n"
                          '[hub.a]\nlisten = "127.0.0.1:5998,trunk"\nmode = "switch"\n'
                          "mac_table_size = 4096\nloop_threshold = 20\nloop_hold = 2.5\n"
                          '[hub.b]\nlisten = "127.0.0.1:5997"\n' + LINK)
    a, b, link = (config.links[n] for n in ("a", "b", "l"))
    assert a.targets == (TCPListenTarget("127.0.0.1", 5998, trunk=True),)
    assert a.endpoints == ("listen:127.0.0.1:5998,trunk",)
    options = a.options.relay_options()
    assert (options.switch, options.mac_age, options.mac_table_size, options.loop_threshold,
            options.loop_hold) == (True, 60.0, 4096, 20, 2.5)
    assert b.options.mode == "hub" and not b.options.relay_options().switch
    assert b.options.mac_age == 60.0            # [defaults] applies to every hub
    assert link.options.mode == "hub"
    # Changing a hub's mode changes its definition: a reload restarts it.
    other = parse_config('[hub.a]\nlisten = "127.0.0.1:5998,trunk"\n')
    assert other.links["a"] != a


def test_trunk_on_listen_and_targets() -> None:
    assert parse_listen("5000,trunk") == TCPListenTarget(None, 5000, trunk=True)
    assert parse_listen("[::1]:5000") == TCPListenTarget("::1", 5000, trunk=False)
    assert parse_config(HUB + 'endpoints = ["relay2.example:5000,trunk"]\n').links["h"] \
        .targets[1] == TCPTarget("relay2.example", 5000, trunk=True)


def test_help_documents_switch_mode() -> None:
    result = subprocess.run([sys.executable, "-m", "fastrelay", "--help"], capture_output=True,
                            text=True, timeout=20, check=True)
    for text in ("--switch", "--mac-age SECONDS", "--mac-table-size N", "--loop-threshold N",
                 "--loop-hold SECONDS", "TARGET,trunk", "split horizon",
                 "fastrelay --switch -l 5000 listen:5001,trunk"):
        assert text in result.stdout, text

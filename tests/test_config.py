"""Config file: parsing, validation errors at key and line, --check, reload equality."""

from __future__ import annotations

import os

import pytest

from fastrelay.cli import main
from fastrelay.config import KeyLines, parse_config, parse_size
from fastrelay.errors import ConfigError
from fastrelay.targets import TCPListenTarget, TCPTarget, UDPTarget

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "fastrelay.toml")

GOOD = """\
[daemon]
metrics = "127.0.0.1:9750"
control = "/run/fastrelay/control.sock"

[defaults]
reconnect_max = 0.5
queue = "1M"

[link.a]
endpoints = ["127.0.0.1:5001", "6000:127.0.0.1:6001"]

[hub.h]
listen = "5000"
endpoints = [
    "127.0.0.1:7000",
]
queue = 65536
reconnect = false
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    """(line, key, message) of each problem parse_config finds in text."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lab.toml")
    return [(p.line, p.key, p.message) for p in info.value.problems]


def test_good_config_parses() -> None:
    config = parse_config(GOOD)
    assert config.daemon.metrics == ("127.0.0.1", 9750)
    assert config.daemon.control == "/run/fastrelay/control.sock"
    a, h = config.links["a"], config.links["h"]
    assert a.point_to_point and not h.point_to_point
    assert a.targets == (TCPTarget("127.0.0.1", 5001), UDPTarget(6000, "127.0.0.1", 6001))
    assert h.endpoints == ("listen:5000", "127.0.0.1:7000")  # listen first, as a target
    assert h.targets[0] == TCPListenTarget(None, 5000)
    assert a.options.reconnect and a.options.queue == 1 << 20
    assert a.options.reconnect_max == 0.5 and h.options.reconnect_max == 0.5  # defaults
    assert not h.options.reconnect and h.options.queue == 65536
    relay = h.options.relay_options(verbosity=1)
    assert relay.queue_bytes == 65536 and relay.backoff["maximum"] == 0.5
    assert (a.line, h.line) == (9, 12)
    assert not config.needs_net_admin


def test_example_config_is_valid() -> None:
    assert main(["--check", EXAMPLE]) == 0
    with open(EXAMPLE) as f:
        assert len(parse_config(f.read()).links) >= 3


@pytest.mark.parametrize("text, line, key, message", [
    ("[link.a]\nendpoints = [\"a\" \"b\"]\n", 2, "", "TOML syntax"),
    ("[daemon]\ncolour = 1\n", 2, "daemon.colour", "unknown key"),
    ("[link.a]\nendpoints = [\"1.1.1.1:1\", \"2.2.2.2:2\"]\nreconect = true\n", 3,
     "link.a.reconect", "did you mean 'reconnect'?"),
    ("[link.a]\nendpoints = [\"127.0.0.1:1\"]\n", 2, "link.a.endpoints",
     "exactly two endpoints, not 1"),
    ("[link.a]\nendpoints = [\n  \"127.0.0.1:1\",\n  \"1:2:3:4\",\n]\n", 4,
     "link.a.endpoints[1]", "too many ':'"),
    ("[link.a]\nendpoints = [\"-\", \"127.0.0.1:1\"]\n", 2, "link.a.endpoints[0]",
     "command line only"),
    ("[link.a]\nendpoints = \"127.0.0.1:1\"\n", 2, "link.a.endpoints", "must be a list"),
    ("[link.a]\nendpoints = [1, \"127.0.0.1:1\"]\n", 2, "link.a.endpoints[0]",
     "not an integer"),
    ("\n\n[hub.h]\nlisten = \"99999\"\n", 4, "hub.h.listen", "not a port number"),
    ("[hub.h]\n", 1, "hub.h", "needs `listen` or at least one endpoint"),
    ("[hub.\"a b\"]\nlisten = \"5000\"\n", 1, 'hub."a b"', "a name is"),
    ("[defaults]\nqueue = \"lots\"\n", 2, "defaults.queue", "not a size"),
    ("[defaults]\nmax_frame = 10\n", 2, "defaults.max_frame", "14..69632"),
    ("[defaults]\nreconnect = \"yes\"\n", 2, "defaults.reconnect", "true or false"),
    ("[defaults]\nreconnect_jitter = 2\n", 2, "defaults.reconnect_jitter", "out of range"),
    ("[defaults]\nreconnect_max = 0.01\n", 2, "defaults.reconnect_max",
     ">= reconnect_initial"),
    ("[defaults]\nreconnect_max = 0\n", 2, "defaults.reconnect_max", "out of range"),
    ("[defaults]\nbatch_wait_us = 1001\n", 2, "defaults.batch_wait_us", "out of range"),
    ("[defaults]\nbatch_wait_us = 2.5\n", 2, "defaults.batch_wait_us", "integer"),
    ("[defaults]\nbind = \"eth0\"\n", 2, "defaults.bind", "IP address"),
    ("[daemon]\nmetrics = \"localhost:x\"\n", 2, "daemon.metrics", "not a port number"),
    ("[daemon]\nstop_timeout = true\n", 2, "daemon.stop_timeout", "must be a number"),
    ("link = 3\n", 1, "link", "must be a table"),
    ("[hub.x]\nlisten = \"5000\"\n[link.x]\nendpoints = [\"a:1\", \"b:2\"]\n", 3, "link.x",
     "already used by [hub.x]"),
    ("[link.x]\nendpoints = [\"a:1\", \"b:2\"]\n[hub.x]\nlisten = \"5000\"\n", 3, "hub.x",
     "already used by [link.x]"),
    ("[hub.x]\nlisten = \"5000\"\n[hub.y]\nlisten = \"127.0.0.1:5000\"\n", 4, "hub.y.listen",
     "binds the same tcp address as 'listen:5000' in 'x'"),
    ("[link.a]\nendpoints = [\"6000:h:1\", \"a:1\"]\n[link.b]\nendpoints = [\"b:2\",\n"
     "  \"6000:h:2\"]\n", 5, "link.b.endpoints", "binds the same udp address as '6000:h:1' in 'a'"),
    ("link.a.endpoints = [\"a:1\"]\n", 1, "link.a.endpoints", "exactly two"),
])
def test_problem_points_at_key_and_line(text: str, line: int, key: str, message: str) -> None:
    found = problems(text)
    assert any(p == (line, key, p[2]) and message in p[2] for p in found), found


def test_every_problem_is_reported_in_line_order() -> None:
    found = problems("[daemon]\nbogus = 1\n[link.a]\nendpoints = [\"-\", \"x:1\"]\n"
                     "queue = -1\n")
    assert [p[0] for p in found] == [2, 4, 5]


def test_error_text_is_file_line_key_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[link.a]\nendpoints = [\"a:1\", \"b:99999\"]\n", "lab.toml")
    assert str(info.value) == ("lab.toml:2: link.a.endpoints[1]: port '99999' is not a port "
                               "number (1-65535)")


def test_key_lines_follow_headers_dotted_and_quoted_keys_not_strings() -> None:
    text = '''\
top = 1
[a . "b.c"]
x.y = 2
s = """
[fake]
z = 3
"""
'w' = 4
[[arr]]
k = 5
'''
    lines = KeyLines(text)
    assert lines.find(("top",)) == 1
    assert lines.find(("a", "b.c")) == 2
    assert lines.find(("a", "b.c", "x", "y")) == 3
    assert lines.find(("a", "b.c", "x", "y", "deeper")) == 3  # longest known prefix
    assert lines.find(("fake",)) is None and lines.find(("a", "b.c", "z")) == 2
    assert lines.find(("a", "b.c", "w")) == 8
    assert lines.find(("arr", "k")) == 10


def test_reload_equality_ignores_position_not_options() -> None:
    one = parse_config(GOOD)
    moved = parse_config("\n\n# comment\n" + GOOD.replace("[link.a]", "[link.z]\nendpoints = "
                                                          "[\"a:1\", \"b:2\"]\n[link.a]"))
    assert moved.links["a"] == one.links["a"] and moved.links["a"].line != one.links["a"].line
    faster = parse_config(GOOD.replace("reconnect_max = 0.5", "reconnect_max = 0.6"))
    assert faster.links["a"] != one.links["a"]  # a changed default changes the link


def test_size_parsing() -> None:
    assert parse_size("4M") == 4 << 20 and parse_size("512k") == 512 << 10
    assert parse_size("1.5MiB") == 3 << 19 and parse_size("65536") == 65536
    with pytest.raises(ValueError):
        parse_size("-1")


def test_check_cli_reports_problems_and_status(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text("[link.a]\nendpoints = [\"a:1\"]\n")
    assert main(["--check", str(bad)]) == 1
    assert f"{bad}:2: link.a.endpoints: a link has exactly two" in capsys.readouterr().err
    assert main(["--check", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read: No such file or directory" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text("[hub.b]\nendpoints = [\"br0\"]\n")
    assert main(["--check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK: 1 links and hubs (hub b)" in out and "CAP_NET_ADMIN" in out


@pytest.mark.parametrize("argv", [
    ["--config", "x.toml", "127.0.0.1:1"],
    ["--config", "x.toml", "--queue", "1M"],
    ["--config", "x.toml", "-l", "5000"],
    ["--check", "x.toml", "--reconnect"],
    ["--control", "/x", "a:1", "b:2"],
])
def test_config_options_that_do_not_combine_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_config_with_errors_does_not_start(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text("[link.a]\nendpoint = []\n")
    assert main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: link.a.endpoint: unknown key (did you mean 'endpoints'?)" in err


def test_readme_daemon_example_is_valid() -> None:
    import re

    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("## Daemon"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    config = parse_config(block.group(1), "README.md")
    assert {"lab-a", "to-rack2", "lab"} <= set(config.links)

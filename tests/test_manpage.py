"""The man page fastrelay(1): generated, committed, rendered without warnings, and as complete
as --help and the config file."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

from fastrelay import config
from fastrelay.manpage import CONFIG_KEYS, render
from fastrelay.targets import TARGET_FORMS

ROOT = os.path.join(os.path.dirname(__file__), "..")
PAGE = os.path.join(ROOT, "fastrelay.1")


def groff(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("groff") is None:
        pytest.fail("groff is not installed (./scripts/test installs groff-base)")
    return subprocess.run(["groff", "-man", *args, PAGE], check=False, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, LC_ALL="C.UTF-8"))


@pytest.fixture(scope="module")
def rendered() -> str:
    """The page as man shows it, 80 columns, without bold or underline."""
    result = groff("-Tutf8", "-rLL=80n", "-P-cbou")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_committed_page_is_what_the_generator_writes() -> None:
    with open(PAGE) as f:
        committed = f.read()
    assert committed == render(), ("fastrelay.1 is stale: run `make man` "
                                   "(python -m fastrelay.manpage > fastrelay.1)")


def test_page_renders_without_a_warning() -> None:
    result = groff("-Tutf8", "-ww", "-z")
    assert result.returncode == 0
    assert result.stderr == ""


def test_page_lists_every_option_of_help(rendered: str) -> None:
    help_text = subprocess.run([sys.executable, "-m", "fastrelay", "--help"], check=True,
                               capture_output=True, text=True, timeout=20).stdout
    section = help_text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    options = set(re.findall(r"^  (-[\w-]+)(?:[ ,].*)?$", section, re.MULTILINE))
    options |= set(re.findall(r"^  -\w.*?, (--[\w-]+)", section, re.MULTILINE))
    assert {"-l", "-v", "--reconnect", "--config", "--watch", "--json", "--help"} <= options
    page_options = set(re.findall(r"^ {7}(-[\w-]+)", rendered, re.MULTILINE))
    page_options |= set(re.findall(r"^ {7}-\w, (--[\w-]+)", rendered, re.MULTILINE))
    assert options <= page_options, f"not in fastrelay.1: {sorted(options - page_options)}"


def test_page_has_every_section_target_form_and_config_key(rendered: str) -> None:
    for title in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "TARGETS", "CONFIGURATION",
                  "COUNTERS", "SIGNALS", "FILES", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES",
                  "COMPATIBILITY", "SEE ALSO"):
        assert f"\n{title}\n" in rendered
    for form in TARGET_FORMS:
        # A tag shorter than the indent shares its line with the text.
        assert re.search(rf"^ {{7}}{re.escape(form.syntax)}(\n| {{2,}}\S)", rendered, re.MULTILINE), form
    documented = {key for _, key, _ in CONFIG_KEYS}
    accepted = (set(config._OPTION_KEYS) | set(config._HUB_KEYS) | set(config._DAEMON_KEYS)
                | {"endpoints", "listen"})
    assert accepted <= documented, f"config keys not in fastrelay.1: {accepted - documented}"


def test_setup_installs_the_page_under_share_man() -> None:
    """setup.py gives the page to `pip install .` as a data file of share/man/man1.

    Read from setup.py's text: running it would cythonize and stamp the build mode of the
    checkout (a wheel built from a clean clone was checked to hold the page there).
    """
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "setup"]
    assert len(calls) == 1
    data_files = [ast.literal_eval(k.value) for k in calls[0].keywords if k.arg == "data_files"]
    assert data_files == [[("share/man/man1", ["fastrelay.1"])]]
    assert os.path.isfile(PAGE)

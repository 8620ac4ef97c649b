"""Fixtures for the qemu end-to-end tests: guest images, a per-test Lab, and the qemu marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .guest import BuildError, GuestImage, ensure_image
from .harness import NOBODY, Lab, account_workdir, guest_lock, image_copy, relay_command

# The lab test boots six guests at once: a larger backstop than a guest pair's.
SLOW_TIMEOUT = 480


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "qemu: boots real qemu guests (TCG); slow, run with -m qemu, one test at a time"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A backstop behind the harness's own timeouts, only where pytest-timeout is installed
    # (an unknown marker would fail a --strict-markers run).
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("qemu") and not item.get_closest_marker("timeout"):
            slow = item.get_closest_marker("slow") is not None
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT if slow else 120))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so the lab fixture knows whether to dump logs.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _image(flavour: str) -> GuestImage:
    try:
        return ensure_image(flavour, log=lambda m: print(f"[qemu guest] {m}", file=sys.stderr))
    except BuildError as e:
        if os.geteuid() != 0:
            pytest.skip(f"cannot build the {flavour} guest image without root: {e}")
        raise


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The fast-booting cloud-kernel guest (virtio-net only)."""
    return _image("cloud")


@pytest.fixture(scope="session")
def guest_image_e1000() -> GuestImage:
    """The generic-kernel guest: the only Debian flavour that ships e1000.ko."""
    img = _image("amd64")
    assert img.supports("e1000"), img
    return img


@pytest.fixture(scope="session")
def fastrelay_cli() -> None:
    """Skip relay tests until ``python -m fastrelay`` runs in this interpreter."""
    r = subprocess.run(
        [*relay_command(), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(
            f"python -m fastrelay is not usable yet: {(r.stderr or r.stdout).strip()[-300:]}"
        )


def _dump_if_failed(request, lab_: Lab) -> None:
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(lab_.diagnostics())


@pytest.fixture
def lab(request, guest_image: GuestImage, tmp_path: Path):
    """A Lab for one test; holds the host-wide guest lock; dumps logs if the test failed."""
    with guest_lock(), Lab(guest_image, tmp_path) as lab_:
        yield lab_
        _dump_if_failed(request, lab_)


@pytest.fixture
def unprivileged_lab(request, guest_image: GuestImage, tmp_path: Path):
    """A Lab whose guests and relays all run as nobody (65534) when the test runs as root
    (CI), or as the invoking user otherwise; in a folder of their own, removed afterwards."""
    account = NOBODY if os.geteuid() == 0 else None
    with guest_lock(), account_workdir(account, tmp_path) as workdir:
        image = image_copy(guest_image, workdir) if account else guest_image
        with Lab(image, workdir, account=account) as lab_:
            yield lab_
            _dump_if_failed(request, lab_)

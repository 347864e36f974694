"""Shared pytest fixtures: real processes on loopback, stopped and cleaned up after."""
from __future__ import annotations

import shutil

import pytest

import containerd as containerd_harness
from harness import BIN, Alertmanager, Exporter, Prometheus, new_workdir, start_exporter  # noqa: F401


@pytest.fixture
def workdir():
    d = new_workdir("e2e")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs():
    """Collects started processes and stops them all, newest first, at teardown."""
    started = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture(scope="session", autouse=True)
def _binary_built():
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `cargo build` first (scripts/test.sh does)")


@pytest.fixture(scope="session")
def containerd():
    """A real containerd (tests/e2e/containerd.py) for the whole session, with its own
    root, state and socket under a temporary directory; skipped, saying why, where
    it cannot run. Tests that stop it must start it again before they end."""
    reason = containerd_harness.unavailable_reason()
    if reason:
        pytest.skip(f"no containerd: {reason}")
    d = new_workdir("containerd")
    ctd = containerd_harness.start_containerd(d)
    yield ctd
    # Containers (tests/e2e/cri.py) outlive a containerd that stops: end them first.
    ctd.remove_all_containers()
    ctd.stop()
    shutil.rmtree(d, ignore_errors=True)

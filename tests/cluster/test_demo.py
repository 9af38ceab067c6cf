"""``make demo`` (``thespian-cluster demo``) passes every step and leaves nothing behind.

It runs the command a user installs: the wheel of this checkout in a fresh venv (the
``installed_wheel`` fixture, checked in tests/packaging), so the demo also proves the
installed package works outside the checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.wheel import InstalledWheel

pytestmark = pytest.mark.cluster


def test_the_demo_passes_every_step(installed_wheel: InstalledWheel) -> None:
    done = installed_wheel.run("thespian-cluster", "demo", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "FAILED" not in done.stdout
    assert done.stdout.rstrip().endswith("every node stopped; no process left")


def test_the_demo_passes_every_step_on_etcd() -> None:
    """``thespian-cluster demo --backend etcd``: the same steps with the global scope in
    an etcd the demo starts (from this venv, which has the ``etcd`` extra's binary)."""
    cli = Path(sys.executable).with_name("thespian-cluster")
    done = subprocess.run(
        [str(cli), "demo", "--backend", "etcd"], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "etcd started for the demo" in done.stdout and "FAILED" not in done.stdout
    assert "every node watches etcd" in done.stdout
    assert done.stdout.rstrip().endswith("every node stopped; no process left")

"""``make demo`` (``thespian-cluster demo``) passes every step and leaves nothing behind.

It runs the command a user installs: the wheel of this checkout in a fresh venv (the
``installed_wheel`` fixture, checked in tests/packaging), so the demo also proves the
installed package works outside the checkout.
"""

from __future__ import annotations

import pytest

from tests.packaging.wheel import InstalledWheel

pytestmark = pytest.mark.cluster


def test_the_demo_passes_every_step(installed_wheel: InstalledWheel) -> None:
    done = installed_wheel.run("thespian-cluster", "demo", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "FAILED" not in done.stdout
    assert done.stdout.rstrip().endswith("every node stopped; no process left")

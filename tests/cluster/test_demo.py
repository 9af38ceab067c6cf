"""``make demo`` (``thespian-cluster demo``) passes every step and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster


def test_the_demo_passes_every_step() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "thespian_cluster.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "FAILED" not in done.stdout
    assert done.stdout.rstrip().endswith("every node stopped; no process left")

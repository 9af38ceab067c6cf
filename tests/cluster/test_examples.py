"""Every script under examples/ runs to completion (exit 0) as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py")


def test_every_example_is_tested() -> None:
    assert EXAMPLES == [
        "client_lookup.py",
        "custom_backend.py",
        "mcp_registry.py",
        "tool_watcher.py",
        "worker_pool.py",
    ]


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=tmp_path,  # not the repository: the script must find its own way
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr[-3000:]}"

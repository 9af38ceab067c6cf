"""Runnable examples; each is run by tests/cluster/test_examples.py.

Run one from the repository root: ``python examples/mcp_registry.py``. Their actors
live in importable modules (``examples.<name>``) because every node is its own set of
processes that import actor classes by module name; :func:`importable` makes the
repository root importable for the script and for the node processes it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def importable() -> None:
    """Put the repository root on ``sys.path`` and ``PYTHONPATH`` (inherited by nodes),
    and keep this process's own log to warnings."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])
    from thespian_cluster.logs import configure_logging

    configure_logging("example", "WARNING", None)  # quiet: only warnings on stderr

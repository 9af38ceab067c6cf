"""Fixtures for multi-node tests: a Cluster that always tears down every node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from thespian_cluster.local_cluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path)
    try:
        yield running
    finally:
        running.close()

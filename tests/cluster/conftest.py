"""Fixtures for multi-node tests: a Cluster that always tears down every node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from thespian_cluster.local_cluster import LocalCluster
from thespian_cluster.netns import NetnsLab
from thespian_cluster.netns import available as netns_available
from thespian_cluster.netns import sweep as netns_sweep


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path)
    try:
        yield running
    finally:
        running.close()


# ---- real network partitions (thespian_cluster.netns) ----------------------------------


@pytest.fixture(scope="session")
def _netns_sweep() -> Iterator[None]:
    """At the end of the session, delete any lab this run (or a dead earlier run) left."""
    yield
    netns_sweep(mine=True)


@pytest.fixture
def netns_lab(_netns_sweep: None) -> Iterator[NetnsLab]:
    """A :class:`NetnsLab`, deleted after the test whatever happened (skips without root
    or iproute2)."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    lab = NetnsLab()
    try:
        yield lab
    finally:
        lab.close()
    assert lab.leftovers() == [], f"lab {lab.id} left {lab.leftovers()}"


@pytest.fixture
def netns_cluster(netns_lab: NetnsLab, tmp_path: Path) -> Iterator[LocalCluster]:
    """A LocalCluster for nodes placed in ``netns_lab`` (``start(name, **lab.place(name))``);
    its nodes are stopped before the lab is deleted."""
    running = LocalCluster(tmp_path)
    try:
        yield running
    finally:
        running.close()

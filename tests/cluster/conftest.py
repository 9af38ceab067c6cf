"""Fixtures for multi-node tests: a Cluster that always tears down every node."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from thespian_cluster.local_cluster import LocalCluster
from thespian_cluster.netns import NetnsLab
from thespian_cluster.netns import available as netns_available
from thespian_cluster.netns import sweep as netns_sweep
from thespian_cluster.testing.etcd_server import EtcdServer


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd member on loopback for the session (tests keep to a prefix of
    their own: :func:`etcd_backend`)."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_backend(etcd_server: EtcdServer) -> dict[str, object]:
    """Settings of ``registry_backend = "etcd"`` on the session's etcd, under a prefix
    of this test's own."""
    return {
        "registry_backend": "etcd",
        "backend": {"endpoints": etcd_server.endpoints, "prefix": f"/t-{uuid.uuid4().hex}/"},
    }


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

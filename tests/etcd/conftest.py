"""Fixtures: one etcd member per test module (``etcd``), a fresh one for tests that
restart, stop or reconfigure it (``own_etcd``), a key prefix of each test's own, and
endpoints that refuse or swallow connections."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from thespian_cluster.backends.etcd import EtcdClient
from thespian_cluster.testing.etcd_server import EtcdServer

# Progress notifications every half second, so a test can wait for one.
PROGRESS_EVERY = "500ms"


@dataclass
class Etcd:
    server: EtcdServer
    client: EtcdClient


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    """A running single-member etcd (shared by the module's tests: use ``prefix``) and
    a client of it with a 5 s timeout."""
    args = [f"--experimental-watch-progress-notify-interval={PROGRESS_EVERY}"]
    with EtcdServer(extra_args=args) as server, server.client(timeout=5) as client:
        yield Etcd(server, client)


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """A single-member etcd of this test's own (to restart, stop or reconfigure)."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def prefix() -> bytes:
    """Keys of this test's own on the shared server."""
    return f"t-{uuid.uuid4().hex[:12]}/".encode()


@pytest.fixture
def refused_endpoint() -> str:
    """An endpoint where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections (the kernel's backlog does) and never
    answers: the shape of a hung member."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"

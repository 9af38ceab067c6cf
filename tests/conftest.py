"""Shared test helpers: free ports, event waits, nodes that always stop."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from thespian_cluster import ClusterSettings, Node, start_node

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def node_settings(tmp_path: Path, **overrides: Any) -> ClusterSettings:
    values: dict[str, Any] = {
        "node_name": "test-node",
        "admin_port": free_port(),
        "data_dir": tmp_path / "data",
        "log_level": "INFO",
        "liveness_probe_interval": 0.2,
    }
    values.update(overrides)
    return ClusterSettings.build(**values)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A running single node on a free port, stopped after the test."""
    running = start_node(node_settings(tmp_path), log_to_stderr=False)
    try:
        yield running
    finally:
        running.stop()

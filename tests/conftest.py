"""Shared test helpers: free ports, event waits, nodes that always stop."""

from __future__ import annotations

import contextlib
import os
import signal
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


# ---- nothing may outlive the suite ----------------------------------------------------


def _suite_processes() -> dict[int, str]:
    """Live (non-zombie) processes that look like ours: forked actor systems keep their
    starter's command line, and subprocess nodes run thespian_cluster."""
    mine = Path("/proc/self/cmdline").read_bytes()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(pid) != os.getpid() and (cmdline == mine or b"thespian_cluster" in cmdline):
            found[int(pid)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


_BEFORE: dict[int, str] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    _BEFORE.update(_suite_processes())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        left = {p: c for p, c in _suite_processes().items() if p not in _BEFORE}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        lines = "\n".join(f"  {pid}: {cmd[:120]}" for pid, cmd in sorted(left.items()))
        print(f"\nprocesses left behind by the test suite:\n{lines}")
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

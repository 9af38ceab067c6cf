"""Shared test helpers: free ports, event waits, nodes that always stop."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.packaging import wheel
from thespian_cluster import ClusterSettings, Node, local_cluster, start_node
from thespian_cluster.testing.ports import free_port

# A shell starts a background job (`make test &`, a CI runner, nohup) with SIGINT
# ignored, and an ignored signal stays ignored across exec: every CLI and node these
# tests start would then shrug off the Ctrl-C the tests send them. A handled signal
# reverts to the default across exec, so handling it here gives children the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# One poller for every test: fails with TimeoutError naming what it waited for.
wait_for = local_cluster.wait_for


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


SESSION_ENV = "THESPIAN_CLUSTER_TEST_SESSION"


def _suite_processes() -> dict[int, str]:
    """Live (non-zombie) processes of this test session.

    Two kinds, and never another suite's running beside it on the machine: forks of
    this process (actor systems started in-process keep its command line), and
    programs it started (subprocess nodes and their actors), which carry
    ``THESPIAN_CLUSTER_TEST_SESSION`` in their environment. (A fork's
    ``/proc/<pid>/environ`` shows the environment its program started with, so the
    token set at session start does not show there.)
    """
    token = f"{SESSION_ENV}={os.environ[SESSION_ENV]}".encode()
    mine = Path("/proc/self/cmdline").read_bytes()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ours = token in environ.split(b"\0") or (cmdline == mine and int(pid) not in _BEFORE)
        # multiprocessing's resource tracker (started by a spawn-context test) is this
        # process's own helper and exits with it.
        helper = b"multiprocessing.resource_tracker" in cmdline
        if int(pid) != os.getpid() and ours and not helper:
            found[int(pid)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


_BEFORE: set[int] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[SESSION_ENV] = uuid.uuid4().hex
    _BEFORE.update(_suite_processes())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        left = _suite_processes()
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


# ---- the package as users install it ------------------------------------------------------


@pytest.fixture(scope="session")
def installed_wheel() -> Iterator[wheel.InstalledWheel]:
    """This checkout built as a wheel and installed, not editable, into a fresh venv
    (tests/packaging/wheel.py); built once per session, removed at its end."""
    with wheel.installed_wheel() as installed:
        yield installed

"""The command line against running nodes, as a user sees it (real subprocesses).

* ``start`` is the node: when the node's admin dies it exits non-zero with one line,
  within a heartbeat timeout, and it keeps no zombie child meanwhile;
* a lookup without ``--scope`` on a cluster node finds global names and groups;
* ``status`` is full width in a file or pipe, ``--watch`` writes frames there,
  ``--wait`` waits for a starting node; it shows the backend, the log names it;
* ``groups`` with no groups says so; a client writes nothing to stderr.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_for
from tests.integration._cli import CLI, client_env, node_config, run_cli, start_cli
from tests.integration.actors import Worker
from thespian_cluster import JoinGroup, Register, Registered
from thespian_cluster.local_cluster import ClusterNode, LocalCluster
from thespian_cluster.supervisors.os_process import process_stats

HEARTBEAT_TIMEOUT = 2.5  # the node's cluster_heartbeat_timeout in these tests
#: Long enough that the status table is wider than 80 columns.
SOLO = "solo-node-with-a-name-long-enough-to-widen-status"


def _zombie_children(pid: int) -> list[int]:
    return [
        child for child, fields in process_stats() if fields[0] == "Z" and int(fields[1]) == pid
    ]


def test_start_exits_when_its_node_is_killed(tmp_path: Path) -> None:
    extra = f"cluster_heartbeat_timeout = {HEARTBEAT_TIMEOUT}\n"
    start = start_cli(node_config(tmp_path / "n.toml", "victim", free_port(), tmp_path, extra))
    pgid = 0
    try:
        assert start.stdout is not None
        line = start.stdout.readline()
        match = re.search(r"\(pgid (\d+)\)", line)
        assert match, line
        pgid = int(match.group(1))
        assert pgid != start.pid  # the node's group is not the start process's
        assert _zombie_children(start.pid) == []  # Thespian's admin launcher, reaped
        os.killpg(pgid, signal.SIGKILL)  # the node crashes: kill -9 -- -PGID
        killed = time.monotonic()
        out, err = start.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        if start.poll() is None:
            start.kill()
            start.communicate()
        if pgid:  # whatever happened above, the node goes too
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    print(f"\nstart exited {took:.2f} s after its node was killed")
    assert start.returncode == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "admin process" in errors[0] and "exited" in errors[0], err
    assert err.strip().splitlines()[-1] == errors[0]
    assert "stopped" not in out
    assert took < HEARTBEAT_TIMEOUT, took


def test_a_bad_backend_is_one_line_and_exit_2(tmp_path: Path) -> None:
    extra = 'registry_backend = "thespian_cluster.backends.local:Nope"\n'
    config = node_config(tmp_path / "n.toml", "bad", free_port(), tmp_path, extra)
    result = run_cli("start", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "registry_backend" in lines[0] and "Nope" in lines[0], lines[0]


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNode]:
    """One cluster node (a cluster of one) started by ``thespian-cluster start``."""
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.start(SOLO)


def run(node: ClusterNode, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--port", str(node.port), cookie=node.cookie)


def test_lookups_without_a_scope_find_global_names(cluster_node: ClusterNode) -> None:
    """The README registers 'weather' globally, then looks it up without --scope."""
    weather = cluster_node.client().createActor(Worker)
    meta: dict[str, Any] = {"capabilities": {"tools": {}}}
    reply = cluster_node.ask(Register(name="weather", address=weather, scope="global", meta=meta))
    assert isinstance(reply, Registered), reply
    found = run(cluster_node, "whereis", "weather")
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"on node {SOLO}" in found.stdout and "(global scope)" in found.stdout
    members = run(cluster_node, "groups", "tool_servers")
    assert "1 member(s) in tool_servers" in members.stdout, members.stdout
    assert "scope=global" in members.stdout
    listed = run(cluster_node, "names")
    assert "weather" in listed.stdout and "1 name(s)" in listed.stdout, listed.stdout
    # --scope still narrows it: the local scope has no 'weather'
    local = run(cluster_node, "whereis", "weather", "--scope", "local")
    assert local.returncode == 1 and "looked in the local scope" in local.stdout
    missing = run(cluster_node, "whereis", "nobody")
    assert missing.returncode == 1
    assert "looked in the local and global scopes" in missing.stdout


def test_groups_says_when_there_are_none(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        node = cluster.start("empty", cluster_enabled=False)
        result = run(node, "groups")
        assert result.returncode == 0
        assert result.stdout.strip() == "no groups (looked in the local scope)"
        worker = node.client().createActor(Worker)
        node.ask(JoinGroup(group="pool", address=worker))
        assert run(node, "groups").stdout.split() == ["pool"]


def test_status_in_a_pipe_is_full_width_and_names_the_backend(cluster_node: ClusterNode) -> None:
    result = run(cluster_node, "status")
    assert result.returncode == 0, result.stderr
    # the node table's address column, whole (at 80 columns it was cut off)
    row = next(line for line in result.stdout.splitlines() if f"{SOLO} *" in line)
    assert f"127.0.0.1:{cluster_node.port}" in row, result.stdout
    assert "backend global" in result.stdout
    assert "registry backend global" in cluster_node.output.read_text()


def test_status_watch_into_a_file_writes_frames(cluster_node: ClusterNode, tmp_path: Path) -> None:
    out = tmp_path / "watch.txt"
    with out.open("w") as sink:
        watch = subprocess.Popen(
            [*CLI, "status", "--watch", "--interval", "0.2", "--port", str(cluster_node.port)],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=client_env(cluster_node.cookie),
        )
    try:
        frames = wait_for(
            lambda: len(re.findall(r"every 0\.2 s", out.read_text())) >= 2 or None,
            30,
            "two frames of status --watch in the file",
        )
        assert frames
    finally:
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    assert "Traceback" not in err, err
    text = out.read_text()
    assert f"127.0.0.1:{cluster_node.port}" in text
    assert "\x1b[" not in text  # frames, not terminal redraws


def test_a_client_writes_nothing_to_stderr(cluster_node: ClusterNode) -> None:
    script = (
        "from thespian_cluster import connect, registry_address\n"
        "from thespian_cluster.node import disconnect\n"
        f"system = connect({cluster_node.port})\n"
        "print(registry_address(system))\n"
        "disconnect(system)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=client_env(cluster_node.cookie),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "ActorAddr" in result.stdout


def test_status_wait_waits_for_a_starting_node(tmp_path: Path) -> None:
    port = free_port()
    never = run_cli("status", "--wait", "0.3", "--port", str(port))
    assert never.returncode == 2
    assert never.stderr.strip().splitlines() == [
        f"error: not ready within 0.3 s: no node is listening on 127.0.0.1:{port}"
    ]
    start = start_cli(node_config(tmp_path / "n.toml", "late", port, tmp_path), capture=False)
    try:
        status = run_cli("status", "--wait", "60", "--port", str(port))
    finally:
        start.send_signal(signal.SIGINT)
        start.wait(60)
    assert status.returncode == 0, status.stderr
    assert "node late" in status.stdout and "registry" in status.stdout
    assert start.returncode == 0

"""Nodes: start and stop, the supervision tree, the CLI, custom backends."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, node_settings, wait_for
from tests.integration.actors import Worker
from thespian_cluster import (
    BackendLoadError,
    ChildrenReply,
    JoinGroup,
    Node,
    NodeError,
    Register,
    Registered,
    RegistryError,
    Whereis,
    WhichChildren,
    connect,
    registry_address,
    start_node,
)
from thespian_cluster.cluster_messages import (
    ClusterNodes,
    ClusterNodesReply,
    GetPartitionStatus,
    PartitionStatus,
)
from thespian_cluster.node import disconnect
from thespian_cluster.supervisors.os_process import live_processes_in_group, pid_listening_on

REPO = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "thespian_cluster.cli"]


def group_gone(pgid: int) -> bool:
    return not live_processes_in_group(pgid)


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    node = start_node(node_settings(tmp_path), log_to_stderr=False)
    pgid = node.pgid
    node.system.createActor(Worker)
    assert not group_gone(pgid)
    node.stop()
    wait_for(lambda: group_gone(pgid), 10, "every process of the node to exit")


def test_a_busy_port_and_a_bad_backend_are_startup_errors(tmp_path: Path, node: Node) -> None:
    with pytest.raises(NodeError, match="already in use"):
        start_node(
            node_settings(tmp_path, admin_port=node.settings.admin_port), log_to_stderr=False
        )
    with pytest.raises(BackendLoadError, match="cannot import"):
        start_node(node_settings(tmp_path, registry_backend="nowhere:Backend"), log_to_stderr=False)


def test_registry_restart_loses_no_registration(node: Node) -> None:
    workers = [node.system.createActor(Worker) for _ in range(3)]
    for index, worker in enumerate(workers):
        assert isinstance(node.ask(Register(name=f"w{index}", address=worker)), Registered)
    node.ask(JoinGroup(group="pool", address=workers[0]))
    old_registry = node.registry
    registry_pid = _pid_of_child(node, "registry")
    os.kill(registry_pid, signal.SIGKILL)

    def restarted() -> object:
        address = registry_address(node.system, node.root)
        return address if address != old_registry else None

    new_registry = wait_for(restarted, 10, "the Registry to be restarted")
    for index, worker in enumerate(workers):
        reply = node.system.ask(new_registry, Whereis(name=f"w{index}"), 10)
        assert reply.address == worker, f"w{index} was lost in the restart"
    taken = node.system.ask(new_registry, Register(name="w0", address=workers[1]), 10)
    assert type(taken).__name__ == "AlreadyRegistered"
    tree = node.ask_root(WhichChildren())
    assert tree.by_id("registry").restart_count == 1


def test_cluster_supervisor_restarts_its_children_one_for_one(tmp_path: Path) -> None:
    node = start_node(node_settings(tmp_path, cluster_enabled=True), log_to_stderr=False)
    try:
        tree = node.ask_root(WhichChildren())
        assert [c.id for c in tree.children] == ["registry", "cluster"]
        cluster = tree.by_id("cluster")
        assert cluster.type == "supervisor"
        members = node.system.ask(cluster.address, WhichChildren(), 10)
        assert isinstance(members, ChildrenReply)
        assert [c.id for c in members.children] == [
            "registry_dist",
            "node_monitor",
            "split_brain_detector",
        ]
        detector = members.by_id("split_brain_detector").address
        verdict = node.system.ask(detector, GetPartitionStatus(), 10)
        assert isinstance(verdict, PartitionStatus) and verdict.node == "test-node"
        monitor = members.by_id("node_monitor").address
        nodes = node.system.ask(monitor, ClusterNodes(), 10)
        assert isinstance(nodes, ClusterNodesReply) and nodes.nodes == ["test-node"]

        pid = _pid_of(node, members.by_id("node_monitor").address)
        os.kill(pid, signal.SIGKILL)

        def monitor_restarted() -> ChildrenReply | None:
            now = node.system.ask(cluster.address, WhichChildren(), 10)
            return now if now.by_id("node_monitor").restart_count == 1 else None

        after = wait_for(monitor_restarted, 10, "NodeMonitor to be restarted")
        assert after.by_id("node_monitor").address != members.by_id("node_monitor").address
        for sibling in ("registry_dist", "split_brain_detector"):
            assert after.by_id(sibling).address == members.by_id(sibling).address
            assert after.by_id(sibling).restart_count == 0
        nodes = node.system.ask(after.by_id("node_monitor").address, ClusterNodes(), 10)
        assert isinstance(nodes, ClusterNodesReply) and nodes.joined
    finally:
        node.stop()


def test_custom_backend_from_the_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "backends.md").read_text()
    source = re.search(r"```python\n(.*?)```", text, re.S)
    assert source is not None
    (tmp_path / "dict_backend.py").write_text(source.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))  # forked actor processes inherit it
    node = start_node(
        node_settings(tmp_path, registry_backend="dict_backend:DictBackend"), log_to_stderr=False
    )
    try:
        worker = node.system.createActor(Worker)
        caps = {"capabilities": ["tools"]}
        assert isinstance(node.ask(Register(name="d", address=worker, meta=caps)), Registered)
        assert node.ask(Whereis(name="d")).address == worker
        assert type(node.ask(Register(name="d", address=node.registry))).__name__ == (
            "AlreadyRegistered"
        )
        from thespian_cluster import GroupMembers

        assert node.ask(GroupMembers(group="tool_servers")).addresses == [worker]
        reply = node.ask(Whereis(name="d", scope="global"))
        assert isinstance(reply, RegistryError) and reply.code == "not_distributed"
    finally:
        node.stop()


# ---- the command line ---------------------------------------------------------------


@contextlib.contextmanager
def cli_node(tmp_path: Path, **env_extra: str) -> Iterator[tuple[int, dict[str, str]]]:
    """A node run by `thespian-cluster start` in its own session; stopped with Ctrl-C."""
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        f'node_name = "cli"\nadmin_port = {port}\ndata_dir = "{tmp_path / "data"}"\n'
        'log_level = "INFO"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    server = subprocess.Popen(
        [*CLI, "start", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "running on 127.0.0.1" in line:
                break
        else:
            raise AssertionError("the CLI node did not start")
        yield port, env
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out
    assert "stopped" in out
    for secret in env_extra.values():
        assert secret not in out, "the cookie leaked into the node's output"


def run_cli(port: int, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--port", str(port)], capture_output=True, text=True, env=env, timeout=90
    )


def test_cli_start_query_and_stop(tmp_path: Path) -> None:
    with cli_node(tmp_path) as (port, env):
        status = run_cli(port, env, "status")
        assert status.returncode == 0, status.stderr
        assert "registry" in status.stdout and "restarts=0" in status.stdout
        pgid = _node_pgid_from_status(status.stdout)
        assert run_cli(port, env, "whereis", "nobody").returncode == 1
        assert "0 name(s)" in run_cli(port, env, "names").stdout

        client = connect(port)
        try:
            worker = client.createActor(Worker)
            registered = client.ask(
                registry_address(client), Register(name="w", address=worker), 10
            )
            assert isinstance(registered, Registered)
        finally:
            disconnect(client)
        found = run_cli(port, env, "whereis", "w")
        assert found.returncode == 0 and "on node cli" in found.stdout
        assert "1 name(s)" in run_cli(port, env, "names").stdout
        assert run_cli(port, env, "groups").stdout.split() == ["servers"]
        assert "1 member(s) in servers" in run_cli(port, env, "groups", "servers").stdout
        # the registry survives the CLI's visits (a client must not shut the node down)
        assert "registry" in run_cli(port, env, "status").stdout
    wait_for(lambda: group_gone(pgid), 10, "the CLI node's processes to exit")


def test_cli_needs_the_nodes_cookie(tmp_path: Path) -> None:
    cookie = "right-cookie-0123456789abcdef"
    with cli_node(tmp_path, THESPIAN_CLUSTER_CLUSTER_COOKIE=cookie) as (port, env):
        good = run_cli(port, env, "names")
        assert good.returncode == 0 and "0 name(s)" in good.stdout, good.stderr
        wrong_env = {**env, "THESPIAN_CLUSTER_CLUSTER_COOKIE": "wrong-cookie-0123456789abcdef"}
        began = time.monotonic()
        wrong = run_cli(port, wrong_env, "names")
        took = time.monotonic() - began
        assert wrong.returncode == 2 and "refused us" in wrong.stderr, wrong.stderr
        assert cookie not in wrong.stderr + wrong.stdout
        # The admin's rejection of the first packet ends the wait: not Thespian's ~11 s
        # of retries (a CLI start alone is ~1 s here).
        assert took < 8.0, f"a refused client took {took:.1f} s to say so"
        no_cookie = {k: v for k, v in env.items() if "COOKIE" not in k}
        assert run_cli(port, no_cookie, "names").returncode == 2
        # the node still serves the right cookie after the refusals
        assert run_cli(port, env, "names").returncode == 0
    log = (tmp_path / "data" / f"cli-{port}" / "node.log").read_text()
    assert cookie not in log


def test_cli_refuses_a_port_with_no_node() -> None:
    result = subprocess.run(
        [*CLI, "names", "--port", str(free_port())], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "no node is listening" in result.stderr


def test_killpg_kills_a_whole_node_started_elsewhere(tmp_path: Path) -> None:
    port = free_port()
    script = (
        "import sys, time\n"
        "from thespian_cluster import ClusterSettings, start_node\n"
        f"n = start_node(ClusterSettings.build(node_name='victim', admin_port={port}, "
        f"data_dir={str(tmp_path)!r}), log_to_stderr=False)\n"
        "print(n.pgid, flush=True)\n"
        "time.sleep(600)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert starter.stdout is not None
        pgid = int(starter.stdout.readline())
        assert not group_gone(pgid)
        os.killpg(pgid, signal.SIGKILL)
        wait_for(lambda: group_gone(pgid), 10, "the node's group to die")
    finally:
        starter.kill()
        starter.wait()


# ---- helpers ------------------------------------------------------------------------


def _pid_of(node: Node, address: object) -> int:
    from thespian.system.messages.status import Thespian_StatusReq

    status = node.system.ask(address, Thespian_StatusReq(), 10)
    assert status is not None
    return _pid_listening_on(status.actorAddress.addressDetails.sockname[1])


def _pid_of_child(node: Node, child_id: str) -> int:
    return _pid_of(node, node.ask_root(WhichChildren()).by_id(child_id).address)


def _pid_listening_on(port: int) -> int:
    pid = pid_listening_on(port)
    assert pid is not None, f"nobody listens on {port}"
    return pid


def _node_pgid_from_status(text: str) -> int:
    found = re.search(r"process group (\d+)", text)
    assert found is not None, text
    return int(found.group(1))


def test_actor_logging_reaches_the_node_log(node: Node) -> None:
    from tests.integration.actors import LoggingActor

    actor = node.system.createActor(LoggingActor)
    assert node.system.ask(actor, "hello-from-the-actor", 10) == "logged"
    log = node.settings.resolved_log_file
    wait_for(
        lambda: log.exists() and "user actor says hello-from-the-actor" in log.read_text(),
        10,
        "the actor's logging record in node.log",
    )
    line = next(x for x in log.read_text().splitlines() if "hello-from-the-actor" in x)
    assert "WARNING" in line and "user.actor" in line
    assert os.environ["THESPLOG_FILE"].startswith(str(node.settings.data_dir))


def test_a_loopback_node_listens_on_loopback_only(node: Node) -> None:
    from thespian.system.messages.status import Thespian_StatusReq

    worker = node.system.createActor(Worker)
    status = node.system.ask(worker, Thespian_StatusReq(), 10)
    ports = {node.settings.admin_port, status.actorAddress.addressDetails.sockname[1]}
    listening = _listeners()
    for port in ports:
        assert listening.get(port) == {"127.0.0.1"}, (port, listening.get(port))


def _listeners() -> dict[int, set[str]]:
    """port -> local IPv4 addresses listening on it, from /proc/net/tcp."""
    found: dict[int, set[str]] = {}
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if state == "0A":
                hex_ip, hex_port = local.split(":")
                ip = ".".join(str(int(hex_ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
                found.setdefault(int(hex_port, 16), set()).add(ip)
    return found

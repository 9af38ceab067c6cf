"""Clients of a node: finding it creates nothing, waiting for it is safe, asks time out.

A client may look at a node from the first millisecond of its start (a readiness
probe, ``status`` in a loop): the lookups read what the node publishes and never
create or stop an actor, so no start can fail because somebody looked. Each test
here starts real nodes (the real CLI in a subprocess, or ``start_node``) while a
client polls them as fast as it can.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

from tests.conftest import free_port, node_settings
from tests.integration._cli import client_env, node_config, start_cli
from tests.integration.actors import Worker
from thespian_cluster import (
    AskTimeout,
    NodeError,
    NodeNotReady,
    Register,
    Registered,
    Whereis,
    WhereisReply,
    ask,
    connect,
    registry_address,
    start_node,
    wait_ready,
)
from thespian_cluster.node import disconnect, node_entry
from thespian_cluster.supervisors.os_process import pid_listening_on

#: Starts per test: "dozens" in all, each watched by a client polling flat out.
STARTS = 12


def _poll_until_ready(port: int, process: subprocess.Popen[str]) -> int:
    """Connect and look up the Registry flat out until it is found; the rounds it took."""
    rounds = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rounds += 1
        if process.poll() is not None:
            raise AssertionError(f"the start failed: {process.communicate()[1].strip()}")
        try:
            system = connect(port)
        except NodeError:
            continue  # nothing listens yet
        try:
            registry_address(system)
            return rounds
        except NodeError:
            pass  # the node is starting
        finally:
            disconnect(system)
    raise AssertionError("the node never became ready")


def test_cli_starts_survive_a_client_polling_them(tmp_path: Path) -> None:
    """Old lookups created (and then stopped) a stray root the starting node could
    take as its own: 14 of 15 such starts failed with 'node root did not start'."""
    rounds = []
    for attempt in range(STARTS):
        port = free_port()
        config = node_config(tmp_path / f"node-{attempt}.toml", f"p{attempt}", port, tmp_path)
        process = start_cli(config)
        try:
            rounds.append(_poll_until_ready(port, process))
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "running on" in out and "stopped" in out, out
    print(f"\n{STARTS} CLI starts, all up; client rounds before ready: {rounds}")


@contextmanager
def _poller(port: int) -> Iterator[subprocess.Popen[str]]:
    """Another process polling ``port`` flat out (tests/integration/_poller.py)."""
    poller = subprocess.Popen(
        [sys.executable, "-m", "tests.integration._poller", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(),
    )
    try:
        assert poller.stdout is not None
        assert poller.stdout.readline().strip() == "polling"
        yield poller
    finally:
        poller.send_signal(signal.SIGTERM)
        poller.communicate(timeout=30)


def test_start_node_survives_a_client_polling_it(tmp_path: Path) -> None:
    for attempt in range(STARTS):
        settings = node_settings(tmp_path, node_name=f"s{attempt}")
        with _poller(settings.admin_port) as poller:
            node = start_node(settings, log_to_stderr=False)
            try:
                assert isinstance(node.ask(Whereis(name="x")), WhereisReply)
                # Thespian's admin launcher (pid = the node's pgid) is reaped, no zombie
                assert not Path(f"/proc/{node.pgid}").exists()
            finally:
                node.stop()
            assert poller.poll() is None, poller.communicate()[1]


def test_wait_ready_from_before_the_start(tmp_path: Path) -> None:
    """wait_ready may be called before anything listens; it returns once the node is up."""
    port = free_port()
    config = node_config(tmp_path / "node.toml", "w", port, tmp_path)
    with pytest.raises(NodeNotReady, match="not ready within"):
        wait_ready(port, timeout=0.2)
    process = start_cli(config)
    try:
        entry = wait_ready(port, timeout=60)
        assert entry.node == "w" and entry.backend == "local" and not entry.cluster
        assert entry.registry is not None
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0


@pytest.fixture
def plain_system() -> Iterator[int]:
    """A plain Thespian actor system (no thespian-cluster node) on a free port."""
    port = free_port()
    script = (
        "import sys, time\n"
        "from thespian.actors import ActorSystem\n"
        f"ActorSystem('multiprocTCPBase', {{'Admin Port': {port}}}, transientUnique=True)\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=client_env()
    )
    try:
        assert starter.stdout is not None and starter.stdout.readline().strip() == "up"
        yield port
    finally:
        admin = pid_listening_on(port)
        if admin is not None:
            with suppress(ProcessLookupError):
                os.killpg(os.getpgid(admin), signal.SIGKILL)
        starter.kill()
        starter.wait(10)


def test_a_plain_actor_system_is_told_apart_and_left_alone(plain_system: int) -> None:
    system = connect(plain_system)
    try:
        for look in (registry_address, node_entry, lambda s: wait_ready(plain_system, timeout=5)):
            with pytest.raises(NodeError, match="runs no thespian-cluster node"):
                look(system)
        admin = system._systemBase.adminAddr
        status = ask(system, admin, Thespian_StatusReq(), 10, expect=Thespian_SystemStatus)
    finally:
        disconnect(system)
    # The old lookup created a root there (and then told it to exit).
    assert status.childActors == []
    assert status.globalActors == {}
    created = {k: v for k, v in status.miscKeyVals.items() if "PendingActor" in k}
    assert not created, created


def test_node_ask_times_out_and_skips_late_replies(tmp_path: Path) -> None:
    """A timed-out ask raises AskTimeout; the late reply is not taken for the next one's."""
    node = start_node(node_settings(tmp_path), log_to_stderr=False)
    try:
        worker = node.system.createActor(Worker)
        assert isinstance(node.ask(Register(name="w", address=worker)), Registered)
        registry = node.registry
        registry_pid = pid_listening_on(registry.addressDetails.sockname[1])
        assert registry_pid is not None
        os.kill(registry_pid, signal.SIGSTOP)  # a Registry that hangs for a moment
        try:
            with pytest.raises(AskTimeout, match=r"within 0\.3 s"):
                node.ask(Whereis(name="nobody"), timeout=0.3)
        finally:
            os.kill(registry_pid, signal.SIGCONT)
        # The answer to "nobody" arrives first now; this ask must skip it. (Straight
        # to the Registry: Node.ask would first look it up again, and that ask could
        # swallow the late answer instead.)
        reply = ask(node.system, registry, Whereis(name="w"))
        assert isinstance(reply, WhereisReply) and reply.name == "w" and reply.address == worker
    finally:
        node.stop()


def test_ask_raises_on_silence(tmp_path: Path) -> None:
    node = start_node(node_settings(tmp_path), log_to_stderr=False)
    try:
        worker = node.system.createActor(Worker)  # answers "info" only
        with pytest.raises(AskTimeout):
            ask(node.system, worker, "nothing it answers", 0.2)
        pid, _ = ask(node.system, worker, "info", 10)
        assert pid > 0
    finally:
        node.stop()


def test_connect_never_starts_an_actor_system(tmp_path: Path) -> None:
    """A node that goes away between connect's check and Thespian's constructor: the
    constructor would start a new, empty admin on the port (the old connect did)."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))

    def accept_once_then_close() -> None:
        listener.accept()[0].close()  # connect's "is anyone there?" probe
        listener.close()

    closer = threading.Thread(target=accept_once_then_close)
    closer.start()
    try:
        with pytest.raises(NodeError, match="no node is listening"):
            connect(port)
    finally:
        closer.join(10)
        admin = pid_listening_on(port)
        if admin is not None:  # the old connect's doing: do not leave it running
            os.killpg(os.getpgid(admin), signal.SIGKILL)
    assert admin is None, "connect started an actor system"

"""Every registry request against a real multiprocTCPBase node, and the death paths."""

from __future__ import annotations

import os
import signal

import pytest
from pydantic import ValidationError
from thespian.actors import ActorExitRequest, DeadEnvelope

from tests.conftest import wait_for
from tests.integration.actors import HookedWorker, Worker
from thespian_cluster import (
    AlreadyRegistered,
    GroupList,
    GroupMembers,
    GroupMembersReply,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    ListGroups,
    ListNames,
    MetaUpdated,
    NameList,
    Node,
    Register,
    Registered,
    RegistryError,
    TableReader,
    Unregister,
    Unregistered,
    UpdateMeta,
    Whereis,
    WhereisReply,
)
from thespian_cluster.supervisors.os_process import is_dead


def test_register_whereis_unregister_round_trip(node: Node) -> None:
    worker = node.system.createActor(Worker)
    request = Register(name="weather", address=worker, meta={"v": 1})
    reply = node.ask(request)
    assert isinstance(reply, Registered)
    assert reply.request_id == request.request_id
    assert reply.address == worker and reply.node == "test-node"

    found = node.ask(Whereis(name="weather"))
    assert isinstance(found, WhereisReply)
    assert found.address == worker and found.meta == {"v": 1}

    gone = node.ask(Unregister(name="weather"))
    assert isinstance(gone, Unregistered)
    assert node.ask(Whereis(name="weather")).address is None
    again = node.ask(Unregister(name="weather"))
    assert isinstance(again, RegistryError) and again.code == "not_registered"


def test_names_are_unique_per_kind(node: Node) -> None:
    first, second = node.system.createActor(Worker), node.system.createActor(Worker)
    assert isinstance(node.ask(Register(name="x", address=first)), Registered)
    taken = node.ask(Register(name="x", address=second))
    assert isinstance(taken, AlreadyRegistered) and taken.owner == first
    # the same name under another kind is another name
    assert isinstance(node.ask(Register(name="x", address=second, kind="transport")), Registered)
    # re-registering by the owner updates its meta
    assert isinstance(node.ask(Register(name="x", address=first, meta={"m": 2})), Registered)
    assert node.ask(Whereis(name="x")).meta == {"m": 2}
    # tuple names
    assert isinstance(node.ask(Register(name=("pool", "1"), address=first)), Registered)
    assert node.ask(Whereis(name=("pool", "1"))).address == first


def test_list_names_and_update_meta(node: Node) -> None:
    a, b = node.system.createActor(Worker), node.system.createActor(Worker)
    node.ask(Register(name="a", address=a))
    node.ask(Register(name="b", address=b, kind="transport"))
    every = node.ask(ListNames())
    assert isinstance(every, NameList)
    assert sorted(str(n.name) for n in every.names) == ["a", "b"]
    servers = node.ask(ListNames(kind="server"))
    assert [n.name for n in servers.names] == ["a"]

    updated = node.ask(UpdateMeta(name="a", meta={"capabilities": ["tools"]}))
    assert isinstance(updated, MetaUpdated) and updated.meta == {"capabilities": ["tools"]}
    tool_servers = node.ask(GroupMembers(group="tool_servers"))
    assert tool_servers.addresses == [a]
    missing = node.ask(UpdateMeta(name="nope", meta={}))
    assert isinstance(missing, RegistryError) and missing.code == "not_registered"


def test_groups_join_leave_members(node: Node) -> None:
    a, b = node.system.createActor(Worker), node.system.createActor(Worker)
    assert isinstance(node.ask(JoinGroup(group="g", address=a)), JoinedGroup)
    node.ask(JoinGroup(group="g", address=b))
    node.ask(JoinGroup(group="g", address=b))  # idempotent
    members = node.ask(GroupMembers(group="g"))
    assert isinstance(members, GroupMembersReply)
    assert len(members.members) == 2 and {m.node for m in members.members} == {"test-node"}
    local = node.ask(GroupMembers(group="g", local_only=True))
    assert len(local.members) == 2

    left = node.ask(LeaveGroup(group="g", address=a))
    assert isinstance(left, LeftGroup) and left.was_member
    assert node.ask(LeaveGroup(group="g", address=a)).was_member is False
    assert node.ask(GroupMembers(group="g")).addresses == [b]
    groups = node.ask(ListGroups())
    assert isinstance(groups, GroupList) and groups.groups == ["g"]


def test_automatic_groups_follow_registrations(node: Node) -> None:
    server, transport = node.system.createActor(Worker), node.system.createActor(Worker)
    caps = {"capabilities": {"tools": {}, "prompts": {}}}
    node.ask(Register(name="s", address=server, meta=caps))
    node.ask(Register(name="t", address=transport, kind="transport"))
    assert node.ask(GroupMembers(group="servers")).addresses == [server]
    assert node.ask(GroupMembers(group="transports")).addresses == [transport]
    assert node.ask(GroupMembers(group="tool_servers")).addresses == [server]
    assert node.ask(GroupMembers(group="prompt_servers")).addresses == [server]
    assert node.ask(GroupMembers(group="resource_servers")).addresses == []
    node.ask(Unregister(name="s"))
    assert node.ask(GroupMembers(group="servers")).addresses == []
    assert "tool_servers" not in node.ask(ListGroups()).groups


def test_global_scope_is_refused_until_distributed(node: Node) -> None:
    worker = node.system.createActor(Worker)
    for request in (
        Register(name="g", address=worker, scope="global"),
        Whereis(name="g", scope="global"),
        JoinGroup(group="g", address=worker, scope="global"),
    ):
        reply = node.ask(request)
        assert isinstance(reply, RegistryError) and reply.code == "not_distributed"
        assert reply.request_id == request.request_id


@pytest.mark.parametrize(
    "build",
    [
        lambda a: Register(name="", address=a),
        lambda a: Register(name="x" * 256, address=a),
        lambda a: Register(name="x", address=a, scope="galaxy"),
        lambda a: Register(name="x", address=a, kind="no spaces"),
        lambda a: Register(name="x", address=a, meta={"f": lambda: 1}),
        lambda a: Register(name="x", address="not-an-address"),
        lambda a: Register(name=(), address=a),
        lambda a: Whereis(name=7),
        lambda a: JoinGroup(group="", address=a),
    ],
)
def test_bad_input_is_a_validation_error_at_the_caller(node: Node, build: object) -> None:
    worker = node.system.createActor(Worker)
    with pytest.raises(ValidationError):
        build(worker)  # type: ignore[operator]


def test_unknown_messages_leave_the_registry_serving(node: Node) -> None:
    worker = node.system.createActor(Worker)
    node.ask(Register(name="keep", address=worker))
    assert node.system.ask(node.registry, {"not": "a request"}, 1) is None
    assert node.system.ask(node.registry, "garbage", 1) is None
    assert node.ask(Whereis(name="keep")).address == worker


def test_lookup_reads_the_node_table_without_a_message(node: Node) -> None:
    worker = node.system.createActor(Worker)
    reader = TableReader(node.settings.node_dir)
    assert reader.lookup("fast") is None
    node.ask(Register(name="fast", address=worker))
    entry = reader.lookup("fast")
    assert entry is not None and entry.address == worker
    node.ask(Unregister(name="fast"))
    assert reader.lookup("fast") is None


# ---- the three death paths ------------------------------------------------------------


def _register_worker(node: Node, cls: type, name: str) -> tuple[object, int]:
    worker = node.system.createActor(cls)
    assert isinstance(node.ask(Register(name=name, address=worker)), Registered)
    node.ask(JoinGroup(group="pool", address=worker))
    pid, _ = node.system.ask(worker, "info", 10)
    return worker, pid


def _freed(node: Node, name: str) -> bool:
    return (
        node.ask(Whereis(name=name)).address is None
        and node.ask(GroupMembers(group="pool")).members == []
    )


def test_exit_hook_frees_names_on_actor_exit_request(node: Node) -> None:
    worker, _ = _register_worker(node, HookedWorker, "hooked")
    node.system.tell(worker, ActorExitRequest())
    wait_for(lambda: _freed(node, "hooked"), 5, "exit hook to free the name")


def test_sigkill_frees_names_through_liveness_probes(node: Node) -> None:
    _, pid = _register_worker(node, Worker, "killed")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _freed(node, "killed"), 5, "liveness probe to free the name")


def test_a_late_dead_letter_for_a_listening_address_frees_nothing(node: Node) -> None:
    # A dead letter arrives after the send failed; meanwhile the kernel may have given the
    # dead actor's port to a new actor that registered (a restarted supervised child: the
    # bench's restart loop hit it). The Registry checks the port before it believes one.
    worker, _ = _register_worker(node, Worker, "reborn")
    node.system.tell(node.registry, DeadEnvelope(worker, "a message the old one missed"))
    node.system.tell(node.registry, DeadEnvelope("not an address", "junk"))  # no crash either
    # This Register is answered after both envelopes: the Registry takes messages in order.
    probe_worker = node.system.createActor(Worker)
    assert isinstance(node.ask(Register(name="probe", address=probe_worker)), Registered)
    assert node.ask(Whereis(name="reborn")).address == worker
    assert [m.address for m in node.ask(GroupMembers(group="pool")).members] == [worker]


def test_plain_exit_frees_names_through_probes(node: Node) -> None:
    worker, _ = _register_worker(node, Worker, "plain")
    node.system.tell(worker, ActorExitRequest())
    wait_for(lambda: _freed(node, "plain"), 5, "probe to notice a plain exit")


def test_dead_letter_frees_names_at_once(tmp_path: object) -> None:
    # Probes effectively off: only the dead letter of a message to the dead actor can free it.
    from tests.conftest import node_settings
    from thespian_cluster import start_node

    running = start_node(
        node_settings(tmp_path, liveness_probe_interval=3600),
        log_to_stderr=False,  # type: ignore[arg-type]
    )
    try:
        _, pid = _register_worker(running, Worker, "lettered")
        worker = running.ask(Whereis(name="lettered")).address
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: is_dead(pid), 5, "the worker process to die")
        assert running.ask(Whereis(name="lettered")).address == worker  # nobody noticed yet
        running.system.tell(worker, "anyone there?")
        wait_for(lambda: _freed(running, "lettered"), 5, "dead letter to free the name")
    finally:
        running.stop()

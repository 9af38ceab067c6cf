"""One contract for every backend (as pykka runs its tests over every runtime).

The same requests, the same answers, whichever backend serves them: ``LocalBackend``
(scope local), the custom backend of docs/backends.md (scope local), the
built-in global registry (``GlobalGroupsBackend``, scope global, asked on a node that
does not sequence, so every write crosses the cluster), and the etcd backend (scope
global, on a real etcd).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import node_settings, wait_for
from tests.integration.actors import Worker
from thespian_cluster import (
    AlreadyRegistered,
    GroupList,
    GroupMembers,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    ListGroups,
    ListNames,
    MetaUpdated,
    Register,
    Registered,
    RegisteredMany,
    RegisterMany,
    RegistryError,
    Unregister,
    Unregistered,
    UpdateMeta,
    Whereis,
    start_node,
)
from thespian_cluster.local_cluster import LocalCluster
from thespian_cluster.supervisors.os_process import pid_listening_on

REPO = Path(__file__).parents[2]


@dataclass
class Backend:
    """How a test talks to one backend: ask the front door, make actors, in a scope."""

    scope: str
    ask: Callable[[Any], Any]
    actor: Callable[[], Any]


@pytest.fixture(params=["local", "docs_custom", "global", "etcd"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    if request.param in ("global", "etcd"):
        settings = request.getfixturevalue("etcd_backend") if request.param == "etcd" else {}
        with LocalCluster(tmp_path, **settings) as cluster:
            a = cluster.start("a")
            b = cluster.start("b", leader=a)
            cluster.wait_formed(["a", "b"])
            yield Backend("global", b.ask, lambda: b.client().createActor(Worker))
        return
    overrides: dict[str, Any] = {}
    if request.param == "docs_custom":
        source = re.search(r"```python\n(.*?)```", (REPO / "docs/backends.md").read_text(), re.S)
        assert source is not None
        (tmp_path / "dict_backend.py").write_text(source.group(1))
        monkeypatch.syspath_prepend(str(tmp_path))  # forked actor processes inherit it
        overrides["registry_backend"] = "dict_backend:DictBackend"
    node = start_node(node_settings(tmp_path, **overrides), log_to_stderr=False)
    try:
        yield Backend("local", node.ask, lambda: node.system.createActor(Worker))
    finally:
        node.stop()


def test_register_whereis_unregister(backend: Backend) -> None:
    scope = backend.scope
    owner = backend.actor()
    reply = backend.ask(Register(name="svc", address=owner, scope=scope, meta={"v": 1}))
    assert isinstance(reply, Registered) and reply.address == owner
    found = backend.ask(Whereis(name="svc", scope=scope))
    assert found.address == owner and found.meta == {"v": 1}
    assert backend.ask(Whereis(name="svc", kind="transport", scope=scope)).address is None
    assert isinstance(backend.ask(Unregister(name="svc", scope=scope)), Unregistered)
    assert backend.ask(Whereis(name="svc", scope=scope)).address is None
    again = backend.ask(Unregister(name="svc", scope=scope))
    assert isinstance(again, RegistryError) and again.code == "not_registered"


def test_one_owner_per_name_and_the_owner_may_update(backend: Backend) -> None:
    scope = backend.scope
    first, second = backend.actor(), backend.actor()
    assert isinstance(backend.ask(Register(name="x", address=first, scope=scope)), Registered)
    taken = backend.ask(Register(name="x", address=second, scope=scope))
    assert isinstance(taken, AlreadyRegistered) and taken.owner == first
    other_kind = Register(name="x", address=second, kind="transport", scope=scope)
    assert isinstance(backend.ask(other_kind), Registered)
    again = backend.ask(Register(name="x", address=first, scope=scope, meta={"m": 2}))
    assert isinstance(again, Registered)
    assert backend.ask(Whereis(name="x", scope=scope)).meta == {"m": 2}
    updated = backend.ask(UpdateMeta(name="x", scope=scope, meta={"m": 3}))
    assert isinstance(updated, MetaUpdated)
    assert backend.ask(Whereis(name="x", scope=scope)).meta == {"m": 3}
    missing = backend.ask(UpdateMeta(name="nobody", scope=scope, meta={}))
    assert isinstance(missing, RegistryError) and missing.code == "not_registered"
    names = backend.ask(ListNames(scope=scope))
    assert sorted((i.kind, i.name) for i in names.names) == [("server", "x"), ("transport", "x")]


def test_groups_and_automatic_groups(backend: Backend) -> None:
    scope = backend.scope
    member, server = backend.actor(), backend.actor()
    assert isinstance(
        backend.ask(JoinGroup(group="pool", address=member, scope=scope)), JoinedGroup
    )
    assert isinstance(
        backend.ask(JoinGroup(group="pool", address=member, scope=scope)), JoinedGroup
    )
    caps = {"capabilities": {"tools": {}, "prompts": {}}}
    backend.ask(Register(name="srv", address=server, scope=scope, meta=caps))
    assert backend.ask(GroupMembers(group="pool", scope=scope)).addresses == [member]
    assert backend.ask(GroupMembers(group="tool_servers", scope=scope)).addresses == [server]
    assert backend.ask(GroupMembers(group="prompt_servers", scope=scope)).addresses == [server]
    groups = backend.ask(ListGroups(scope=scope))
    assert isinstance(groups, GroupList)
    assert {"pool", "servers", "tool_servers", "prompt_servers"} <= set(groups.groups)
    left = backend.ask(LeaveGroup(group="pool", address=member, scope=scope))
    assert isinstance(left, LeftGroup) and left.was_member
    not_member = backend.ask(LeaveGroup(group="pool", address=member, scope=scope))
    assert isinstance(not_member, LeftGroup) and not not_member.was_member
    assert backend.ask(GroupMembers(group="pool", scope=scope)).members == []


def test_batches_answer_per_item_and_a_bad_item_fails_alone(backend: Backend) -> None:
    scope = backend.scope
    owner, rival = backend.actor(), backend.actor()
    backend.ask(Register(name="held", address=rival, scope=scope))
    bad = Register.model_construct(
        request_id="bad", name=None, address=owner, kind="server", scope=scope, meta={}
    )
    items = [Register(name=f"b{i}", address=owner) for i in range(3)]
    items += [bad, Register(name="held", address=owner)]
    reply = backend.ask(RegisterMany(registrations=items, scope=scope), 30)
    assert isinstance(reply, RegisteredMany)
    kinds = [type(r).__name__ for r in reply.results]
    assert kinds == ["Registered"] * 3 + ["RegistryError", "AlreadyRegistered"]
    assert [r.request_id for r in reply.results] == [i.request_id for i in items]
    assert backend.ask(Whereis(name="b2", scope=scope)).address == owner


def test_a_dead_owner_loses_its_names_and_memberships(backend: Backend) -> None:
    scope = backend.scope
    doomed = backend.actor()
    backend.ask(Register(name="doomed", address=doomed, scope=scope))
    backend.ask(JoinGroup(group="mortals", address=doomed, scope=scope))
    pid = pid_listening_on(doomed.addressDetails.sockname[1])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: backend.ask(Whereis(name="doomed", scope=scope)).address is None, 10, "freed")
    assert backend.ask(GroupMembers(group="mortals", scope=scope)).members == []

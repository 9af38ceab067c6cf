"""One contract for every backend (as pykka runs its tests over every runtime).

The same requests, the same answers, whichever backend serves them: ``LocalBackend``
(scope local), the custom backend of docs/backends.md (scope local), the global
registry (``GlobalGroupsBackend``, scope global, asked on a node that does not
sequence, so every write crosses the cluster), the custom global backend of
docs/backends.md (``SqliteGlobalBackend``: scope global in one SQLite file shared by
two nodes, asked on the second), the same backend reading its file instead of keeping
a mirror (``SqliteDirectGlobalBackend``: every global read goes to the backend), and the
etcd backend (scope global, on a real etcd).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    NotMirrored,
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
from thespian_cluster.local_cluster import ClusterNode, LocalCluster
from thespian_cluster.node_table import TableReader
from thespian_cluster.supervisors.os_process import pid_listening_on

REPO = Path(__file__).parents[2]


@dataclass
class Backend:
    """How a test talks to one backend: ask the front door, make actors, in a scope."""

    scope: str
    ask: Callable[[Any], Any]
    actor: Callable[[], Any]
    node_dir: Path  # of the node asked
    mirrored: bool = True  # does lookup() read the scope from the node table?


def docs_block(marker: str | None = None) -> str:
    """A ```python block of docs/backends.md: the first, or the one after ``marker``."""
    start = re.escape(marker) + r"\s*" if marker else ""
    found = re.search(start + r"```python\n(.*?)```", (REPO / "docs/backends.md").read_text(), re.S)
    assert found is not None, f"no python block {marker or ''} in docs/backends.md"
    return found.group(1)


@contextmanager
def two_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docs_global: str | None, **settings: Any
) -> Iterator[tuple[ClusterNode, ClusterNode]]:
    """Nodes a and b, formed; with ``docs_global`` (a node backend of the docs' modules,
    ``sqlite_scope:SqliteNodeBackend`` or ``sqlite_direct:SqliteDirectNodeBackend``)
    their global scope is in one SQLite file they share; ``settings`` for both."""
    overrides: dict[str, Any] = dict(settings)
    if docs_global:
        (tmp_path / "sqlite_scope.py").write_text(docs_block("<!-- global backend example -->"))
        direct = docs_block("<!-- unmirrored global backend example -->")
        (tmp_path / "sqlite_direct.py").write_text(direct)
        # The nodes are CLI processes: they find the module on PYTHONPATH.
        path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
        monkeypatch.setenv("PYTHONPATH", path)
        overrides["registry_backend"] = docs_global
        overrides["backend"] = {"path": str(tmp_path / "global-scope.sqlite")}
    with LocalCluster(tmp_path, **overrides) as cluster:
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        yield a, b


#: The docs' global backends, by param: the node backend that selects each.
DOCS_GLOBAL = {
    "docs_custom_global": "sqlite_scope:SqliteNodeBackend",
    "docs_unmirrored_global": "sqlite_direct:SqliteDirectNodeBackend",
}


@pytest.fixture(
    params=["local", "docs_custom", "global", *DOCS_GLOBAL, "etcd"],
)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    if request.param in ("global", *DOCS_GLOBAL, "etcd"):
        settings = request.getfixturevalue("etcd_backend") if request.param == "etcd" else {}
        docs_global = DOCS_GLOBAL.get(request.param)
        with two_nodes(tmp_path, monkeypatch, docs_global, **settings) as (_, b):
            mirrored = request.param != "docs_unmirrored_global"
            make = lambda: b.client().createActor(Worker)  # noqa: E731
            yield Backend("global", b.ask, make, b.node_dir, mirrored)
        return
    overrides = {}
    if request.param == "docs_custom":
        (tmp_path / "dict_backend.py").write_text(docs_block())
        monkeypatch.syspath_prepend(str(tmp_path))  # forked actor processes inherit it
        overrides["registry_backend"] = "dict_backend:DictBackend"
    node = start_node(node_settings(tmp_path, **overrides), log_to_stderr=False)
    try:
        make = lambda: node.system.createActor(Worker)  # noqa: E731
        yield Backend("local", node.ask, make, node.settings.node_dir)
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


def test_lookup_reads_the_node_table_or_says_it_cannot(backend: Backend) -> None:
    """Message-free reads: a mirrored scope's name is in the node table of the node
    that was asked; an unmirrored scope's lookup raises NotMirrored, naming the backend,
    rather than answering None for a name that exists."""
    owner = backend.actor()
    reply = backend.ask(Register(name="looked-up", address=owner, scope=backend.scope))
    assert isinstance(reply, Registered)
    reader = TableReader(backend.node_dir)
    if backend.mirrored:
        assert reader.lookup("looked-up", scope=backend.scope) is not None
        assert reader.lookup("looked-up", scope=backend.scope).address == owner
        assert reader.lookup("nobody", scope=backend.scope) is None
        return
    with pytest.raises(NotMirrored, match="sqlite_direct:SqliteDirectNodeBackend"):
        reader.lookup("looked-up", scope=backend.scope)
    with pytest.raises(NotMirrored):
        reader.lookup("nobody", scope=backend.scope)
    assert backend.ask(Whereis(name="looked-up", scope=backend.scope)).address == owner


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


def test_a_batch_that_names_one_key_twice_applies_its_items_in_order(backend: Backend) -> None:
    scope = backend.scope
    owner, rival = backend.actor(), backend.actor()
    items = [
        Register(name="twice", address=owner, meta={"v": 1}),
        Register(name="twice", address=owner, meta={"v": 2}),  # the owner again: new meta
        Register(name="contested", address=owner),
        Register(name="contested", address=rival),  # second: loses to the first
        *(Register(name=f"new{i}", address=owner) for i in range(5)),
    ]
    reply = backend.ask(RegisterMany(registrations=items, scope=scope), 30)
    assert isinstance(reply, RegisteredMany)
    kinds = [type(r).__name__ for r in reply.results]
    assert kinds == ["Registered"] * 3 + ["AlreadyRegistered"] + ["Registered"] * 5
    assert reply.results[3].owner == owner
    assert backend.ask(Whereis(name="twice", scope=scope)).meta == {"v": 2}
    assert backend.ask(Whereis(name="contested", scope=scope)).address == owner
    assert backend.ask(Whereis(name="new4", scope=scope)).address == owner


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


def test_the_docs_global_backend_is_one_table_for_both_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the file: a's mirror sees b's names (its poll), a's claim of b's name is
    refused naming b's actor, b's restarted RegistryDist finds b's names in the file, and
    b's death as a node frees its names on a."""
    with two_nodes(tmp_path, monkeypatch, DOCS_GLOBAL["docs_custom_global"]) as (a, b):
        on_b, on_a = b.client().createActor(Worker), a.client().createActor(Worker)
        assert isinstance(b.ask(Register(name="one", address=on_b, scope="global")), Registered)
        assert isinstance(b.ask(JoinGroup(group="g", address=on_b, scope="global")), JoinedGroup)
        seen = wait_for(lambda: a.ask(Whereis(name="one", scope="global")).address, 5, "a sees")
        assert seen == on_b
        taken = a.ask(Register(name="one", address=on_a, scope="global"))
        assert isinstance(taken, AlreadyRegistered) and taken.owner == on_b and taken.node == "b"
        refused = a.ask(Unregister(name="one", scope="global"))
        assert isinstance(refused, RegistryError) and refused.code == "not_owner"
        # b's RegistryDist crashes and is restarted: the file still holds b's names.
        dist = TableReader(b.node_dir).agent("registry_dist")
        pid = pid_listening_on(dist.addressDetails.sockname[1])
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: TableReader(b.node_dir).agent("registry_dist") != dist, 10, "restart")
        assert b.ask(Whereis(name="one", scope="global")).address == on_b
        assert isinstance(b.ask(Register(name="two", address=on_b, scope="global")), Registered)
        b.kill()
        purged = lambda: a.ask(ListNames(scope="global")).names == []  # noqa: E731
        wait_for(purged, 20, "b's names purged on a")
        assert a.ask(GroupMembers(group="g", scope="global")).members == []
        assert isinstance(a.ask(Register(name="one", address=on_a, scope="global")), Registered)

"""A Registry that does not trust its callers (issue 9): real nodes, hostile messages.

Every request here is built the way a client with another ``messages.py`` would
build it: ``model_construct`` skips validation at the sender, so only the Registry's
validation on receipt stands between the bytes and its state. After each request
the node must still answer, and its four views (``ListNames``, ``ListGroups``,
``Whereis``, ``lookup()``) must agree with each other and hold only valid records.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from thespian.actors import ActorAddress

from tests.conftest import node_settings, wait_for
from tests.integration.actors import Worker
from tests.integration.faulty_backend import BACKEND, ON_REMOVE, TABLE
from thespian_cluster import (
    GroupList,
    GroupMembers,
    GroupMembersReply,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    ListGroups,
    ListNames,
    NameList,
    Node,
    Register,
    Registered,
    RegistryError,
    TableReader,
    Unregister,
    UpdateMeta,
    Whereis,
    WhereisReply,
    connect,
    registry_address,
    start_node,
)
from thespian_cluster.core.table import Entry, Member
from thespian_cluster.messages import RECEIVED, Request
from thespian_cluster.node import disconnect
from thespian_cluster.node_table import TableWriter
from thespian_cluster.supervisors.os_process import is_dead, pid_listening_on
from thespian_cluster.validation import entry_problem, member_problem

INVALID = "invalid_request"
FAULTY = "tests.integration.faulty_backend:FaultyBackend"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, list[Any]]]:
    """One node for the module (starting one per example would blow the time budget),
    with two live workers to use as addresses."""
    running = start_node(node_settings(tmp_path_factory.mktemp("hostile")), log_to_stderr=False)
    try:
        workers = [running.system.createActor(Worker) for _ in range(2)]
        yield running, workers
    finally:
        running.stop()


def _ask(node: Node, message: Any) -> Any:
    return node.system.ask(node.registry, message, 10)


def _is_invalid(reply: Any, request_id: Any = None) -> bool:
    return (
        isinstance(reply, RegistryError)
        and reply.code == INVALID
        and (request_id is None or reply.request_id == request_id)
    )


def check_consistent(node: Node) -> None:
    """The Registry answers, and its views agree and hold only valid records."""
    names = _ask(node, ListNames())
    assert isinstance(names, NameList), names
    groups = _ask(node, ListGroups())
    assert isinstance(groups, GroupList), groups
    reader = TableReader(node.settings.node_dir)
    stored_names, stored_members = reader.records()
    assert [entry_problem(e) for e in stored_names] == [None] * len(stored_names)
    assert [member_problem(m) for m in stored_members] == [None] * len(stored_members)
    listed = {(i.kind, i.name): i.address for i in names.names}
    assert listed == {(e.kind, e.name): e.address for e in stored_names}
    for (kind, name), address in listed.items():
        assert _ask(node, Whereis(name=name, kind=kind)).address == address
        found = reader.lookup(name, kind)
        assert found is not None and found.address == address
    explicit = {m.group for m in stored_members}
    assert explicit <= set(groups.groups)


# ---- hypothesis: every request type, built from hostile field values ------------------

_NAMES = ["a", "b", ("pool", "1")]
_WORKER = object()  # stands for "one of the live workers"
_BAD_ADDRESS = ActorAddress("fake")  # a real ActorAddress, but not a TCP one
junk = st.sampled_from([None, 0, -1, 3.5, "", b"bytes", [], {}, [1, [2]], {"k": "v"}, ("t",), True])
big = st.sampled_from(["x" * 10_000, "é" * 255, "x" * 256, tuple(["x"] * 17), "\x00\n\ud800"])
OMIT = object()


def field(valid: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> Any:
    """A field's value: valid 7 times in 9 (so that whole requests are valid often
    enough to change state), else hostile, else left out."""
    hostile = st.one_of(junk, *bad)
    return st.integers(0, 8).flatmap(
        lambda roll: valid if roll < 7 else hostile if roll == 7 else st.just(OMIT)
    )


names = field(st.sampled_from(_NAMES), big, st.text(max_size=8))
kinds = field(st.sampled_from(["server", "transport", "my.kind"]), big)
groups = field(st.sampled_from(["g", "h", "servers"]), big)
addresses = field(st.just(_WORKER), st.just(_BAD_ADDRESS), st.just("not an address"))
metas = field(
    st.sampled_from([{}, {"v": 1}, {"capabilities": {"tools": {}}}]),
    st.just({"big": "x" * (70 * 1024)}),
    st.just({1: "int key"}),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
scopes = field(st.sampled_from(["local", "global"]), st.just("galaxy"))
flags = field(st.booleans())
request_ids = field(st.builds(lambda: uuid.uuid4().hex), st.sampled_from(["x" * 200]))


def _fields(**strategies: Any) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of field values; left-out fields are absent (model_construct then fills in
    the defaults, as a sender's older ``messages.py`` would)."""
    return st.fixed_dictionaries(strategies).map(
        lambda d: {k: v for k, v in d.items() if v is not OMIT}
    )


requests = st.one_of(
    st.tuples(
        st.just(Register),
        _fields(
            name=names,
            address=addresses,
            kind=kinds,
            scope=scopes,
            meta=metas,
            request_id=request_ids,
        ),
    ),
    st.tuples(
        st.just(Unregister), _fields(name=names, kind=kinds, scope=scopes, request_id=request_ids)
    ),
    st.tuples(
        st.just(Whereis), _fields(name=names, kind=kinds, scope=scopes, request_id=request_ids)
    ),
    st.tuples(
        st.just(UpdateMeta),
        _fields(name=names, kind=kinds, meta=metas, scope=scopes, request_id=request_ids),
    ),
    st.tuples(st.just(ListNames), _fields(kind=kinds, scope=scopes, request_id=request_ids)),
    st.tuples(
        st.just(JoinGroup),
        _fields(group=groups, address=addresses, meta=metas, request_id=request_ids),
    ),
    st.tuples(
        st.just(LeaveGroup), _fields(group=groups, address=addresses, request_id=request_ids)
    ),
    st.tuples(
        st.just(GroupMembers), _fields(group=groups, local_only=flags, request_id=request_ids)
    ),
    st.tuples(st.just(ListGroups), _fields(scope=scopes, request_id=request_ids)),
)


def _valid(cls: type[Request], fields: dict[str, Any]) -> bool:
    """The oracle: what the message model says about these fields at a receiver."""
    if "request_id" not in fields:
        return False  # a sender's object always has one; a reply could not echo a new one
    try:
        cls.model_validate(dict(fields), strict=True, context=RECEIVED)
    except ValidationError:
        return False
    return True


@settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests, drop_request_id=st.integers(0, 9).map(lambda roll: roll == 0))
def test_hostile_requests_never_poison_the_registry(
    shared: tuple[Node, list[Any]],
    request: tuple[type[Request], dict[str, Any]],
    drop_request_id: bool,
) -> None:
    node, workers = shared
    cls, fields = request
    message = cls.model_construct(
        **{k: (workers[0] if v is _WORKER else v) for k, v in fields.items()}
    )
    if drop_request_id:
        message.__dict__.pop("request_id", None)
    fields = message.__dict__  # what travels: model_construct fills in the defaults
    reply = _ask(node, message)
    assert reply is not None, "the Registry did not answer"
    rid = fields.get("request_id")
    usable = isinstance(rid, str) and 0 < len(rid) <= 128
    if _valid(cls, fields):
        event(f"valid {cls.__name__}: {type(reply).__name__}")
        assert not _is_invalid(reply), reply
        assert reply.request_id == rid
    else:
        event("invalid")
        assert _is_invalid(reply, rid if usable else ""), reply
    check_consistent(node)


# ---- one regression test per defect of the issue --------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda w: Register.model_construct(name=None, address=w), id="name None"),
        pytest.param(lambda w: Register.model_construct(name=42, address=w), id="name int"),
        pytest.param(lambda w: Register.model_construct(name="k", kind=7, address=w), id="kind"),
        pytest.param(lambda w: JoinGroup.model_construct(group=None, address=w), id="group"),
        pytest.param(
            lambda w: Register.model_construct(name="x" * 10_000, address=w), id="10k name"
        ),
        pytest.param(
            lambda w: Register.model_construct(name="big", address=w, meta={"b": "x" * 5_000_000}),
            id="5MB meta register",
        ),
        pytest.param(
            lambda w: Register.model_construct(name="s", address="not an address"),
            id="string address register",
        ),
        pytest.param(
            lambda w: JoinGroup.model_construct(group="g", address="not an address"),
            id="string address join",
        ),
    ],
)
def test_defects_of_issue_9_are_refused(shared: tuple[Node, list[Any]], build: Any) -> None:
    node, workers = shared
    request = build(workers[1])
    reply = _ask(node, request)
    assert _is_invalid(reply, request.request_id), reply
    check_consistent(node)


def test_5mb_meta_via_update_meta_changes_nothing(shared: tuple[Node, list[Any]]) -> None:
    node, workers = shared
    assert isinstance(
        _ask(node, Register(name="meta", address=workers[1], meta={"v": 1})), Registered
    )
    request = UpdateMeta.model_construct(name="meta", meta={"b": "x" * 5_000_000})
    assert _is_invalid(_ask(node, request), request.request_id)
    assert _ask(node, Whereis(name="meta")).meta == {"v": 1}
    entry = TableReader(node.settings.node_dir).lookup("meta")
    assert entry is not None and entry.meta == {"v": 1}
    check_consistent(node)


def test_a_name_too_long_for_the_table_is_refused_by_the_model() -> None:
    with pytest.raises(ValidationError, match="too long for the node table"):
        Register(name="é" * 255, address=ActorAddress("fake"))


def test_junk_is_harmless(shared: tuple[Node, list[Any]]) -> None:
    node, _ = shared
    nested: list[Any] = []
    for _ in range(200):
        nested = [nested]
    junk_messages: list[Any] = [
        "garbage",
        {"not": "a request"},
        None,
        b"\x00" * 100_000,
        nested,
        ("Register", "weather", "server"),
        Registered.model_construct(request_id="r"),  # a reply: never answered
        Register.model_construct(),  # no fields at all, no request id
    ]
    for message in junk_messages:
        reply = node.system.ask(node.registry, message, 0.5)
        if isinstance(message, Register):
            assert _is_invalid(reply, message.request_id), reply
        else:
            assert reply is None, (message, reply)
    # anything carrying a usable request id gets an answer instead of a timeout
    reply = _ask(node, {"request_id": "dict-1", "name": "x"})
    assert _is_invalid(reply, "dict-1")
    check_consistent(node)


# ---- all or nothing -------------------------------------------------------------------


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Node]:
    running = start_node(node_settings(tmp_path, registry_backend=FAULTY), log_to_stderr=False)
    try:
        yield running
    finally:
        running.stop()


def _failed(reply: Any) -> bool:
    return isinstance(reply, RegistryError) and reply.code == "backend_failure"


def test_a_failed_change_is_rolled_back_everywhere(faulty: Node) -> None:
    node = faulty
    worker, other = node.system.createActor(Worker), node.system.createActor(Worker)
    reader = TableReader(node.settings.node_dir)
    for fault in (BACKEND, TABLE):
        # a new name: memory changed, then the backend or the table failed
        assert _failed(
            node.ask(Register(name=f"new-{fault}", address=worker, meta={"fault": fault}))
        )
        assert node.ask(Whereis(name=f"new-{fault}")).address is None
        assert reader.lookup(f"new-{fault}") is None
        # an existing name's meta: the old meta stays
        assert isinstance(
            node.ask(Register(name=f"old-{fault}", address=worker, meta={"v": 1})), Registered
        )
        assert _failed(node.ask(UpdateMeta(name=f"old-{fault}", meta={"fault": fault})))
        assert node.ask(Whereis(name=f"old-{fault}")).meta == {"v": 1}
        assert reader.lookup(f"old-{fault}").meta == {"v": 1}  # type: ignore[union-attr]
        # a new membership, and an existing one whose meta would change
        assert _failed(
            node.ask(JoinGroup(group=f"g-{fault}", address=worker, meta={"fault": fault}))
        )
        assert node.ask(JoinGroup(group=f"g-{fault}", address=other, meta={"v": 1})).group
        assert _failed(
            node.ask(JoinGroup(group=f"g-{fault}", address=other, meta={"fault": fault}))
        )
        members = node.ask(GroupMembers(group=f"g-{fault}"))
        assert isinstance(members, GroupMembersReply)
        assert [(m.address, m.meta) for m in members.members] == [(other, {"v": 1})]
    # removals that fail put the name / membership back
    assert isinstance(node.ask(Register(name=f"{ON_REMOVE}-n", address=worker)), Registered)
    assert _failed(node.ask(Unregister(name=f"{ON_REMOVE}-n")))
    assert node.ask(Whereis(name=f"{ON_REMOVE}-n")).address == worker
    assert isinstance(node.ask(JoinGroup(group=f"{ON_REMOVE}-g", address=worker)), JoinedGroup)
    assert _failed(node.ask(LeaveGroup(group=f"{ON_REMOVE}-g", address=worker)))
    assert node.ask(GroupMembers(group=f"{ON_REMOVE}-g")).addresses == [worker]
    check_consistent(node)


def test_probing_survives_a_failed_round(faulty: Node) -> None:
    # The faulty backend's first probe round raised: probing must have gone on.
    node = faulty
    worker = node.system.createActor(Worker)
    assert isinstance(node.ask(Register(name="probed", address=worker)), Registered)
    pid, _ = node.system.ask(worker, "info", 10)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: node.ask(Whereis(name="probed")).address is None, 5, "a probe to free it")


# ---- never poisoned: a node table that already holds bad records -----------------------


def test_a_poisoned_node_table_is_repaired_when_the_registry_restarts(tmp_path: Path) -> None:
    node = start_node(node_settings(tmp_path), log_to_stderr=False)
    try:
        worker = node.system.createActor(Worker)
        assert isinstance(node.ask(Register(name="good", address=worker)), Registered)
        assert isinstance(node.ask(JoinGroup(group="team", address=worker)), JoinedGroup)
        # What older versions let in, written straight into the table.
        writer = TableWriter(node.settings.node_dir)
        writer.write(
            entries=[
                Entry(None, "server", worker, "test-node"),  # type: ignore[arg-type]
                Entry("int-kind", 7, worker, "test-node"),  # type: ignore[arg-type]
                Entry("str-address", "server", "not an address", "test-node"),
                Entry("huge-meta", "server", worker, "test-node", {"b": "x" * 100_000}),
            ],
            members=[Member(None, worker, "test-node")],  # type: ignore[arg-type]
        )
        with writer._env.begin(write=True) as txn:  # a record that does not even decode
            txn.put(b"n:garbage", b"\x80\x05not a pickle")
        registry = node.registry
        pid = pid_listening_on(registry.addressDetails.sockname[1])
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: is_dead(pid), 5, "the Registry to die")

        def restarted() -> bool:
            node._registry = None
            try:
                return node.registry != registry
            except Exception:  # not back yet
                return False

        wait_for(restarted, 10, "the Registry to be restarted")
        names = node.ask(ListNames())
        assert isinstance(names, NameList)
        assert [n.name for n in names.names] == ["good"]
        assert node.ask(ListGroups()).groups == ["servers", "team"]
        stored_names, stored_members = TableReader(node.settings.node_dir).records()
        assert [e.name for e in stored_names] == ["good"]
        assert [m.group for m in stored_members] == ["team"]
        check_consistent(node)
    finally:
        node.stop()


# ---- many clients at once -------------------------------------------------------------


def test_many_clients_sending_valid_requests_and_junk(shared: tuple[Node, list[Any]]) -> None:
    node, workers = shared
    port = node.settings.admin_port
    errors: list[str] = []

    def client(n: int) -> None:
        system = connect(port)
        try:
            registry = registry_address(system)
            for i in range(15):
                name = f"client-{n}-{i}"
                reply = system.ask(registry, Register(name=name, address=workers[n % 2]), 10)
                if not isinstance(reply, Registered) or reply.name != name:
                    errors.append(f"{name}: {reply!r}")
                bad = Register.model_construct(name=None, address="nope")
                reply = system.ask(registry, bad, 10)
                if not _is_invalid(reply, bad.request_id):
                    errors.append(f"{name} junk: {reply!r}")
                system.tell(registry, ["junk", n, i])
                system.tell(registry, b"\xff" * 1000)
                found = system.ask(registry, Whereis(name=name), 10)
                if not isinstance(found, WhereisReply) or found.address != workers[n % 2]:
                    errors.append(f"{name} whereis: {found!r}")
        except Exception as exc:  # reported below, with the client number
            errors.append(f"client {n}: {exc!r}")
        finally:
            disconnect(system)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    listed = {i.name for i in _ask(node, ListNames()).names}
    assert {f"client-{n}-{i}" for n in range(6) for i in range(15)} <= listed
    check_consistent(node)

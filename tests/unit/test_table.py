"""The name table's invariants under random operation sequences (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.table import Conflict, Entry, NameTable, automatic_groups


@dataclass(frozen=True)
class FakeDetails:
    sockname: tuple[str, int]


class FakeAddress:
    """Duck-types an ActorAddress: comparable, deliberately unhashable."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, port: int) -> None:
        self.addressDetails = FakeDetails(("127.0.0.1", port))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeAddress) and other.addressDetails == self.addressDetails


ADDRESSES = [FakeAddress(p) for p in range(5)]
names = st.sampled_from(["a", "b", "c", ("t", "1")])
kinds = st.sampled_from(["server", "transport", "custom"])
addresses = st.sampled_from(ADDRESSES)
groups = st.sampled_from(["g1", "g2", "servers"])
metas = st.sampled_from(
    [{}, {"capabilities": ["tools"]}, {"capabilities": {"prompts": {}, "resources": {}}}]
)


class TableMachine(RuleBasedStateMachine):
    """A model (plain dicts) next to the real table; they must always agree."""

    def __init__(self) -> None:
        super().__init__()
        self.table = NameTable()
        self.names: dict[tuple[str, object], tuple[int, dict]] = {}  # key -> (port, meta)
        self.groups: dict[str, set[int]] = {}
        self.dead: set[int] = set()
        self.version = 0

    @rule(name=names, kind=kinds, address=addresses, meta=metas)
    def register(self, name: object, kind: str, address: FakeAddress, meta: dict) -> None:
        port = address.addressDetails.sockname[1]
        result = self.table.register(name, kind, address, "n", meta)  # type: ignore[arg-type]
        owner = self.names.get((kind, name))
        if owner is not None and owner[0] != port:
            assert isinstance(result, Conflict)
            assert result.owner.address.addressDetails.sockname[1] == owner[0]
        else:
            assert isinstance(result, Entry)
            self.names[(kind, name)] = (port, meta)
            self.dead.discard(port)

    @rule(name=names, kind=kinds)
    def unregister(self, name: object, kind: str) -> None:
        removed = self.table.unregister(name, kind)  # type: ignore[arg-type]
        assert (removed is not None) == ((kind, name) in self.names)
        self.names.pop((kind, name), None)

    @rule(name=names, kind=kinds, meta=metas)
    def update(self, name: object, kind: str, meta: dict) -> None:
        entry = self.table.update_meta(name, kind, meta)  # type: ignore[arg-type]
        assert (entry is not None) == ((kind, name) in self.names)
        if entry is not None:
            self.names[(kind, name)] = (self.names[(kind, name)][0], meta)

    @rule(group=groups, address=addresses)
    def join(self, group: str, address: FakeAddress) -> None:
        self.table.join(group, address, "n", {})
        self.groups.setdefault(group, set()).add(address.addressDetails.sockname[1])

    @rule(group=groups, address=addresses)
    def leave(self, group: str, address: FakeAddress) -> None:
        port = address.addressDetails.sockname[1]
        was = self.table.leave(group, address)
        assert was == (port in self.groups.get(group, set()))
        self.groups.get(group, set()).discard(port)

    @rule(address=addresses)
    def actor_dies(self, address: FakeAddress) -> None:
        port = address.addressDetails.sockname[1]
        removal = self.table.remove_address(address)
        expected_names = {k for k, (p, _) in self.names.items() if p == port}
        assert {e.key for e in removal.names} == expected_names
        assert set(removal.groups) == {g for g, ps in self.groups.items() if port in ps}
        for key in expected_names:
            del self.names[key]
        for members in self.groups.values():
            members.discard(port)

    @invariant()
    def names_agree(self) -> None:
        listed = {e.key: e for e in self.table.names()}
        assert set(listed) == set(self.names)
        for key, (port, meta) in self.names.items():
            assert listed[key].address.addressDetails.sockname[1] == port
            assert listed[key].meta == meta
            assert self.table.whereis(key[1], key[0]) == listed[key]  # type: ignore[arg-type]

    @invariant()
    def groups_hold_exactly_live_members(self) -> None:
        every_group = set(self.table.groups())
        for group in [
            "g1",
            "g2",
            "servers",
            "transports",
            "tool_servers",
            "prompt_servers",
            "resource_servers",
        ]:
            expected = set(self.groups.get(group, set()))
            for (kind, _), (port, meta) in self.names.items():
                if group in automatic_groups(kind, meta):
                    expected.add(port)
            actual = [m.address.addressDetails.sockname[1] for m in self.table.members(group)]
            assert sorted(actual) == sorted(expected), group  # one row per address
            assert (group in every_group) == bool(expected)

    @invariant()
    def version_moves_forward(self) -> None:
        assert self.table.version >= self.version
        self.version = self.table.version

    @invariant()
    def watched_addresses_are_the_owners(self) -> None:
        owners = {p for p, _ in self.names.values()} | {
            p for ps in self.groups.values() for p in ps
        }
        assert {address_key(a)[2] for a in self.table.addresses()} == owners


TestTable = TableMachine.TestCase


def test_automatic_groups_of_capabilities() -> None:
    assert automatic_groups("server", {}) == {"servers"}
    assert automatic_groups("transport", {"capabilities": ["tools"]}) == {"transports"}
    assert automatic_groups("server", {"capabilities": {"tools": {}, "logging": {}}}) == {
        "servers",
        "tool_servers",
    }
    assert automatic_groups("server", {"capabilities": "prompts"}) == {"servers", "prompt_servers"}
    assert automatic_groups("custom", {"capabilities": ["tools"]}) == frozenset()


def test_address_key_of_unknown_objects_falls_back_to_their_text() -> None:
    assert address_key("x") == ("repr", "x")
    assert address_key(FakeAddress(7)) == ("tcp", "127.0.0.1", 7)


def test_equal_metas_are_stored_once_and_values_keep_their_type() -> None:
    table = NameTable()
    tools = {"capabilities": ["tools"], "limits": {"rps": 5}}
    a = table.register("a", "server", FakeAddress(1), "n", dict(tools))
    b = table.register("b", "server", FakeAddress(2), "n", {"limits": {"rps": 5}, **tools})
    assert isinstance(a, Entry) and isinstance(b, Entry)
    assert a.meta is b.meta and a.meta == tools
    # Equal in Python, not the same value: 1, 1.0 and True, a list and a tuple.
    for n, meta in enumerate([{"v": 1}, {"v": 1.0}, {"v": True}, {"v": [1]}, {"v": (1,)}]):
        entry = table.register(f"t{n}", "transport", FakeAddress(10 + n), "n", meta)
        assert isinstance(entry, Entry)
        assert entry.meta == meta and type(entry.meta["v"]) is type(meta["v"])


def test_metas_that_cannot_be_shared_are_copied() -> None:
    table = NameTable()
    for n, meta in enumerate([{"s": {1, 2}}, {1: "x", "a": "y"}]):  # unhashable; unsortable
        source = dict(meta)
        entry = table.register(f"x{n}", "server", FakeAddress(n), "n", source)
        assert isinstance(entry, Entry) and entry.meta == meta and entry.meta is not source


def test_a_stamped_meta_update_moves_the_entry_between_automatic_groups() -> None:
    """The replica's path (registered_at given, as every PutName has) re-registers an
    owner with new meta: its old capability group must not keep it (found in review)."""
    table = NameTable()
    table.register(
        "s", "server", FakeAddress(1), "n", {"capabilities": ["tools"]}, registered_at=1.0
    )
    table.register(
        "s", "server", FakeAddress(1), "n", {"capabilities": ["prompts"]}, registered_at=2.0
    )
    assert [m.address for m in table.members("prompt_servers")] == [FakeAddress(1)]
    assert table.members("tool_servers") == []
    assert "tool_servers" not in table.groups()

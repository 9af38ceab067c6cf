"""revalidate(): what a receiver makes of whatever arrives (no actor system needed)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster import (
    ActorExiting,
    JoinGroup,
    Register,
    Registered,
    RegistryError,
    Whereis,
)
from thespian_cluster.core.limits import MAX_TABLE_KEY_BYTES, name_key
from thespian_cluster.core.table import Entry, Member
from thespian_cluster.validation import (
    MAX_DETAIL,
    entry_problem,
    member_problem,
    revalidate,
    usable_request_id,
)

TCP = ActorAddress(TCPv4ActorAddress("127.0.0.1", 40000, external=True))


def received(message: Any) -> Any:
    """What the receiver sees: the object after a trip through pickle."""
    return revalidate(pickle.loads(pickle.dumps(message)))


def test_a_valid_request_comes_back_as_a_fresh_equal_copy() -> None:
    request = Register(name="weather", address=TCP, meta={"v": 1})
    checked = received(request)
    assert isinstance(checked, Register) and checked == request


@pytest.mark.parametrize(
    "fields",
    [
        {"name": None},
        {"name": 42},
        {"kind": 7},
        {"name": "x" * 10_000},
        {"name": "é" * 255},  # 255 characters, but too long for a table key
        {"meta": {"b": "x" * 5_000_000}},
        {"address": "not an address"},
        {"address": ActorAddress("fake")},  # an address, but not a TCP one
        {"scope": "galaxy"},
    ],
)
def test_a_bad_field_is_invalid_request_echoing_the_id(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"name": "ok", "address": TCP, "request_id": "r-1"}
    checked = received(Register.model_construct(**{**base, **fields}))
    assert isinstance(checked, RegistryError)
    assert checked.code == "invalid_request" and checked.request_id == "r-1"
    assert len(checked.detail) <= MAX_DETAIL + 100
    assert "xxxxxxxxxx" not in checked.detail  # never echoes the input


def test_a_field_this_version_does_not_have_is_invalid() -> None:
    request = Whereis(name="a", request_id="r-2")
    request.__dict__["surprise"] = 1  # as unpickling a newer sender's object would
    checked = received(request)
    assert isinstance(checked, RegistryError) and checked.request_id == "r-2"


def test_types_are_not_coerced_at_the_receiver() -> None:
    checked = received(Whereis.model_construct(name=b"bytes", request_id="r"))
    assert isinstance(checked, RegistryError)
    checked = received(Whereis.model_construct(name="a", request_id=b"r"))
    assert isinstance(checked, RegistryError) and checked.request_id == ""


def test_a_request_without_an_id_is_answered_with_an_empty_one() -> None:
    request = Whereis.model_construct(name="a")
    request.__dict__.pop("request_id")
    checked = received(request)
    assert isinstance(checked, RegistryError) and checked.request_id == ""


def test_junk_is_dropped_unless_it_carries_a_request_id() -> None:
    nested: list[Any] = []
    for _ in range(500):
        nested = [nested]
    for junk in ("garbage", None, b"\x00", {"k": 1}, ("Register", "x"), nested, 3.5):
        assert revalidate(junk) is None
    answered = revalidate({"request_id": "d-1"})
    assert isinstance(answered, RegistryError) and answered.request_id == "d-1"


def test_replies_and_invalid_one_way_messages_are_never_answered() -> None:
    assert received(Registered.model_construct(request_id="r")) is None
    assert received(ActorExiting.model_construct(address="nope")) is None
    assert isinstance(received(ActorExiting(address=TCP)), ActorExiting)


def test_usable_request_ids() -> None:
    assert usable_request_id(Whereis(name="a", request_id="ok")) == "ok"
    for bad in ("", "x" * 129, None, 5, b"id"):
        assert usable_request_id(Whereis.model_construct(name="a", request_id=bad)) is None


def test_the_models_and_the_table_share_one_key_limit() -> None:
    longest_ok = "x" * 255
    assert len(name_key("server", longest_ok)) <= MAX_TABLE_KEY_BYTES
    assert isinstance(received(Register(name=longest_ok, address=TCP)), Register)
    with pytest.raises(ValueError, match="too long for the node table"):
        JoinGroup(group="é" * 255, address=TCP)


def test_stored_records_are_checked_like_requests() -> None:
    assert entry_problem(Entry("a", "server", TCP, "n")) is None
    assert entry_problem(Entry(None, "server", TCP, "n")) is not None  # type: ignore[arg-type]
    assert entry_problem(Entry("a", "server", "addr", "n")) is not None
    assert entry_problem(Entry("a", "server", TCP, "")) is not None
    assert entry_problem("not an entry") is not None
    assert member_problem(Member("g", TCP, "n")) is None
    assert member_problem(Member(None, TCP, "n")) is not None  # type: ignore[arg-type]

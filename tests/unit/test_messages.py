"""Protocol messages validate on construction and survive pickling."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError
from thespian.actors import ActorAddress

from thespian_cluster import (
    GroupMembers,
    Register,
    RegistryError,
    Unregister,
    Whereis,
    WhereisReply,
)

ADDRESS = ActorAddress("fake")


def test_request_ids_are_fresh_and_can_be_given() -> None:
    assert Whereis(name="a").request_id != Whereis(name="a").request_id
    assert Whereis(name="a", request_id="mine").request_id == "mine"


def test_messages_pickle_round_trip() -> None:
    for message in (
        Register(name=("a", "b"), address=ADDRESS, meta={"k": [1, 2]}),
        Unregister(name="a", kind="transport"),
        GroupMembers(group="g", local_only=True),
        WhereisReply(request_id="r", name="a", kind="server"),
        RegistryError(request_id="r", code="not_registered", detail="x"),
    ):
        assert pickle.loads(pickle.dumps(message)) == message


@pytest.mark.parametrize(
    "values",
    [
        {"name": ""},
        {"name": "x" * 256},
        {"name": ("",)},
        {"name": ()},
        {"scope": "cluster"},
        {"kind": ""},
        {"kind": "9lives"},
        {"meta": {"f": lambda: 1}},
        {"meta": {"big": "x" * 70_000}},
        {"address": "127.0.0.1:1900"},
        {"surprise": 1},
    ],
)
def test_bad_register_requests(values: dict) -> None:
    fields = {"name": "ok", "address": ADDRESS, **values}
    with pytest.raises(ValidationError):
        Register(**fields)


def test_messages_are_immutable() -> None:
    request = Whereis(name="a")
    with pytest.raises(ValidationError):
        request.name = "b"  # type: ignore[misc]


def test_error_codes_are_checked() -> None:
    with pytest.raises(ValidationError):
        RegistryError(request_id="r", code="oops", detail="x")

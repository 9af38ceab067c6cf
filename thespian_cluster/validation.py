"""Validate on receipt: a receiver never trusts the sender's copy of ``messages.py``.

A message is validated where it is built, but what arrives at an actor is whatever
the sender's process pickled: an object made with ``model_construct`` (no
validation), one from an older ``messages.py`` with other fields, or an instance of
our class whose ``__dict__`` was filled by hand. Unpickling a pydantic model sets
its ``__dict__`` directly, so none of the model's validators run on the way in.
Every actor that answers requests therefore calls :func:`revalidate` first and acts
only on what it returns::

    checked = revalidate(message)
    if isinstance(checked, Request):
        self.send(sender, self.answer(checked))  # a fresh, validated copy
    elif isinstance(checked, RegistryError):
        self.send(sender, checked)  # invalid_request; nothing was changed
    # None: not for us (junk, a reply, an invalid one-way message): logged at debug

How it validates, and why it is cheap enough for every message: the received
object's ``__dict__`` goes through the class's own compiled pydantic validator
(``cls.__pydantic_validator__.validate_python``), the same code that ran (or should
have run) at the sender, with the :data:`~thespian_cluster.messages.RECEIVED`
context that adds the receiver's checks (a real TCP actor address), in pydantic's
*strict* mode: pickling keeps types, so a field must arrive with exactly its declared
type (``b"id"`` is not coerced to ``"id"``; the reply could not be matched to it). That costs
about 1 µs for a ``Whereis`` and 2-3 µs for a ``Register`` (``bench/validation.py``),
against ~800 µs for an ``ask()`` round trip. ``model_validate(msg.model_dump())``
is as strict but 2-3x slower, and ``model_dump`` itself fails or warns on the very
objects that need checking.

Limits: nested pydantic models inside a message are validated as instances of their
declared class; pydantic does not re-run their validators unless that class sets
``revalidate_instances="always"``. None of the Registry's requests nests a model; a
message of the cluster actors that does should set it on the nested model.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any, Final

from loguru import logger
from pydantic import ValidationError

from thespian_cluster.core.limits import MAX_REQUEST_ID_LENGTH
from thespian_cluster.core.table import Entry, Member
from thespian_cluster.messages import (
    RECEIVED,
    ErrorCode,
    JoinGroup,
    Message,
    Register,
    RegistryError,
    Reply,
    Request,
)

__all__ = ["describe", "entry_problem", "member_problem", "revalidate", "usable_request_id"]

#: An error's ``detail`` never grows past this: it must not echo a 5 MB input back.
MAX_DETAIL: Final = 1000
_MAX_ERRORS: Final = 5  # errors named in one detail
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_STORED_ID: Final = "stored"  # the request_id of the models that check stored records


def revalidate(message: object) -> Message | RegistryError | None:
    """What a receiver may act on, given whatever arrived.

    Returns one of:

    * a **fresh, validated copy** of a protocol message (a :class:`Request` or a
      one-way :class:`Message`): act on it, never on ``message`` itself;
    * a :class:`RegistryError` with code ``invalid_request`` to send back: a request
      that fails validation (echoing its ``request_id`` when usable, else ``""``),
      or any other object that carries a usable ``request_id`` (so a caller blocked
      in ``ask()`` gets an answer instead of a timeout);
    * ``None``: nothing to do and nothing to answer -- junk without a request id
      (strings, dicts, bytes, ``None``, nested lists...), a :class:`Reply` (answering
      replies would let two actors answer each other forever), or a one-way message
      that fails validation. Logged at debug level, by type name only.

    Never raises.
    """
    if isinstance(message, Reply):
        logger.debug("dropped a {} (replies are not answered)", type(message).__name__)
        return None
    if not isinstance(message, Message):
        return _junk(message)
    data = getattr(message, "__dict__", None)
    if not isinstance(data, dict):
        return _invalid(message, "the message has no fields")
    if isinstance(message, Request) and "request_id" not in data:
        # pydantic would make a fresh id that the sender could never match
        return _invalid(message, "request_id: missing")
    try:
        checked: Message = type(message).__pydantic_validator__.validate_python(
            dict(data), strict=True, context=RECEIVED
        )
    except ValidationError as exc:
        return _invalid(message, describe(exc))
    except Exception as exc:  # a value whose own methods fail (__eq__, __len__, ...)
        return _invalid(message, f"unusable value: {type(exc).__name__}")
    return checked


def usable_request_id(message: object) -> str | None:
    """``message``'s request id if it is one a reply can echo (a non-empty short str)."""
    try:
        if isinstance(message, Mapping):
            rid = message.get("request_id")
        else:
            rid = getattr(message, "__dict__", {}).get("request_id")
    except Exception:  # a hand-built object whose accessors fail
        return None
    if type(rid) is str and 0 < len(rid) <= MAX_REQUEST_ID_LENGTH:
        return rid
    return None


def describe(exc: ValidationError) -> str:
    """A short ``field: reason`` summary of ``exc`` that never quotes the input."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:_MAX_ERRORS]:
        loc = ".".join(_short.repr(p) if not isinstance(p, int) else str(p) for p in error["loc"])
        parts.append(f"{loc or 'message'}: {error['msg']}")
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)[:MAX_DETAIL]


def entry_problem(entry: Any) -> str | None:
    """Why a stored registration must not be served, or None if it is sound.

    The same rules as a ``Register`` received now (name, kind, TCP address, meta size,
    table key), plus the fields only an :class:`Entry` has.
    """
    if type(entry) is not Entry:
        return f"not an Entry but a {type(entry).__name__}"
    if type(entry.node) is not str or not entry.node:
        return "node: not a non-empty str"
    if not isinstance(entry.registered_at, int | float):
        return "registered_at: not a number"
    return _problem(
        Register,
        {"name": entry.name, "kind": entry.kind, "address": entry.address, "meta": entry.meta},
    )


def member_problem(member: Any) -> str | None:
    """Why a stored group membership must not be served, or None if it is sound."""
    if type(member) is not Member:
        return f"not a Member but a {type(member).__name__}"
    if type(member.node) is not str or not member.node:
        return "node: not a non-empty str"
    return _problem(
        JoinGroup, {"group": member.group, "address": member.address, "meta": member.meta}
    )


def _problem(model: type[Request], fields: dict[str, Any]) -> str | None:
    try:
        model.__pydantic_validator__.validate_python(
            {"request_id": _STORED_ID, **fields}, strict=True, context=RECEIVED
        )
    except ValidationError as exc:
        return describe(exc)
    except Exception as exc:  # fields whose own methods fail
        return f"unusable value: {type(exc).__name__}"
    return None


def _invalid(message: Message, detail: str) -> RegistryError | None:
    """The reply to a protocol message that failed validation (None for one-way ones)."""
    logger.debug("invalid {}: {}", type(message).__name__, detail)
    if not isinstance(message, Request):
        return None
    return RegistryError(
        request_id=usable_request_id(message) or "",
        code=ErrorCode.INVALID_REQUEST,
        detail=f"invalid {type(message).__name__}: {detail}",
    )


def _junk(message: object) -> RegistryError | None:
    """Anything that is not a protocol message: answered only if it names a request id."""
    logger.debug("dropped a {}: not a protocol message", type(message).__name__)
    rid = usable_request_id(message)
    if rid is None:
        return None
    return RegistryError(
        request_id=rid,
        code=ErrorCode.INVALID_REQUEST,
        detail=f"not a protocol message: a {type(message).__name__}",
    )

"""What the cluster actors' receive-call-send shells share: settings first
(:class:`ConfiguredFirst`), answering requests, and state saved in the node's
directory so that a restarted actor carries on.

**Requests are validated again on arrival.** A message built with
``model_construct`` (or by a peer that skipped validation) reaches an actor as it
was sent; :func:`answer` builds it again from its fields before any handler sees
it, and answers ``RegistryError(invalid_request)`` if that fails, or
``RegistryError(unknown_request)`` for a request the actor does not serve.

**Saved state** is one pickle per actor, written atomically (a temporary file, then
``replace``) and tagged with the node incarnation: a file of another incarnation (the
node was restarted, so everything it described is gone) or a torn file is ignored.
It is the actor's own file in the node's directory, never data from a peer.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import ValidationError
from thespian.actors import ActorExitRequest

from thespian_cluster.actors.cluster_members import ConfigureComponent
from thespian_cluster.messages import ErrorCode, RegistryError, Reply, Request, SupervisedBy
from thespian_cluster.settings import ClusterSettings

Handler = Callable[[Any, Any], Reply | None]


def error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)


def answer(handlers: Mapping[type, Handler], request: Request, sender: Any) -> Reply | None:
    """The reply to ``request`` from its handler (None: the handler answers later)."""
    handler = handlers.get(type(request))
    if handler is None:
        return error(request, ErrorCode.UNKNOWN_REQUEST, type(request).__name__)
    try:
        request = type(request).model_validate(request.model_dump())
    except (ValidationError, TypeError, ValueError) as exc:
        return error(request, ErrorCode.INVALID_REQUEST, str(exc)[:500])
    return handler(request, sender)


def save_state(path: Path, incarnation: str, state: dict[str, Any], what: str) -> None:
    """Write ``state`` for node incarnation ``incarnation``; a failure is logged."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        data = pickle.dumps({**state, "incarnation": incarnation}, pickle.HIGHEST_PROTOCOL)
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        logger.warning("could not save the {}'s state: {}", what, exc)


def load_state(path: Path, incarnation: str, what: str) -> dict[str, Any] | None:
    """What :func:`save_state` wrote for ``incarnation``, or None."""
    try:
        state = pickle.loads(path.read_bytes())  # our own file, in the node's directory
    except FileNotFoundError:
        return None
    except Exception as exc:  # a torn or foreign file: start afresh, say so
        logger.warning("ignored the {}'s saved state: {}", what, exc)
        return None
    if not isinstance(state, dict) or state.get("incarnation") != incarnation:
        return None
    return state


class ConfiguredFirst:
    """Mixin for an actor whose first message is :class:`ConfigureComponent`.

    Messages that arrive before it are held and replayed, in order, right after
    :meth:`configure` ran (supervision messages before it are dropped: there is
    nothing to supervise yet). In ``receiveMessage``::

        if self.held(message, sender):
            return
    """

    settings: ClusterSettings | None = None

    def held(self, message: Any, sender: Any) -> bool:
        """True if ``message`` was the configuration or is held until it comes."""
        if isinstance(message, ConfigureComponent):
            if self.settings is None:
                self.configure(message.settings)
                early: list[tuple[Any, Any]] = self.__dict__.pop("_held", [])
                for queued, queued_sender in early:
                    self.receiveMessage(queued, queued_sender)  # type: ignore[attr-defined]
            return True
        if self.settings is None:
            if not isinstance(message, ActorExitRequest | SupervisedBy):
                self.__dict__.setdefault("_held", []).append((message, sender))
            return True
        return False

    def configure(self, settings: ClusterSettings) -> None:
        """Take the settings; must set ``self.settings``."""
        raise NotImplementedError

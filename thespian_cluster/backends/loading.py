"""Choosing a backend by name: ``local`` or a dotted path ``package.module:Class``."""

from __future__ import annotations

import importlib
import json

from pydantic import BaseModel, ValidationError

from thespian_cluster.backends.behavior import RegistryBehavior
from thespian_cluster.backends.local import GlobalGroupsBackend, LocalBackend
from thespian_cluster.backends.scope import GlobalBackend
from thespian_cluster.backends.sequenced import SequencedBackend

BUILTIN_BACKENDS: dict[str, type[RegistryBehavior]] = {
    "local": LocalBackend,
    "global": GlobalGroupsBackend,
}
#: Built-in backends imported only when chosen (their modules bring threads and clients).
BUILTIN_PATHS: dict[str, str] = {
    "etcd": "thespian_cluster.backends.etcd:EtcdNodeBackend",
}


class BackendLoadError(RuntimeError):
    """``registry_backend`` names nothing usable; the message says why."""


def backend_class(spec: str) -> type[RegistryBehavior]:
    """The class ``spec`` names; raises :class:`BackendLoadError` with the reason."""
    if spec in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[spec]
    if spec in BUILTIN_PATHS:
        return backend_class(BUILTIN_PATHS[spec])
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise BackendLoadError(
            f"registry_backend = {spec!r}: expected one of "
            f"{sorted([*BUILTIN_BACKENDS, *BUILTIN_PATHS])} "
            "or a dotted path 'package.module:Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendLoadError(
            f"registry_backend = {spec!r}: cannot import {module_name}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BackendLoadError(f"registry_backend = {spec!r}: {module_name} has no {class_name}")
    if not (isinstance(cls, type) and issubclass(cls, RegistryBehavior)):
        raise BackendLoadError(
            f"registry_backend = {spec!r}: {class_name} is not a RegistryBehavior"
        )
    return cls


def load_backend(spec: str, node: str) -> RegistryBehavior:
    """A new backend instance for ``node``."""
    return backend_class(spec)(node)


def scope_backend(spec: str) -> type[GlobalBackend]:
    """The :class:`GlobalBackend` that serves ``scope="global"`` for backend ``spec``.

    Raises:
        BackendLoadError: ``spec`` names nothing usable, or a backend that serves the
            local scope only.
    """
    cls = backend_class(spec)
    scope = cls.global_scope
    if scope is None:
        if cls.is_distributed is RegistryBehavior.is_distributed:
            raise BackendLoadError(f"registry_backend = {spec!r} serves the local scope only")
        return SequencedBackend  # an override of is_distributed() from before global_scope
    if not (isinstance(scope, type) and issubclass(scope, GlobalBackend)):
        raise BackendLoadError(
            f"registry_backend = {spec!r}: its global_scope is not a GlobalBackend"
        )
    return scope


def backend_config(spec: str, table: dict[str, object]) -> BaseModel | None:
    """``[backend]`` validated for backend ``spec`` (None when it serves no global scope).

    A value that arrived as a string (an environment variable) and is not valid for its
    key is read as JSON once more, so ``THESPIAN_CLUSTER_BACKEND__ENDPOINTS='["http://a:2379"]'``
    works like the TOML list. Only the keys that failed are read again: a valid string
    beside them (``name = "123"``) stays the string it is.

    Raises:
        BackendLoadError: the table does not fit the backend's ``config_model``; the
            message names each key (``backend.<key>``) and why.
    """
    cls = backend_class(spec)
    if cls.global_scope is None and cls.is_distributed is RegistryBehavior.is_distributed:
        if table:
            raise BackendLoadError(
                f"[backend] is set, but registry_backend = {spec!r} takes no backend settings"
            )
        return None
    model = scope_backend(spec).config_model
    try:
        return model.model_validate(table)
    except ValidationError as first:
        failed = {error["loc"][0] for error in first.errors() if error["loc"]}
        retried = {k: _json_or_text(v) if k in failed else v for k, v in table.items()}
        try:
            return model.model_validate(retried)
        except ValidationError:
            raise BackendLoadError(_explain(spec, first)) from None


def _json_or_text(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _explain(spec: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        key = ".".join(["backend", *(str(part) for part in error["loc"])])
        if error["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown setting of registry_backend = {spec!r}")
        elif error["type"] == "missing":  # its "input" is the whole table: not worth showing
            problems.append(f"{key}: {error['msg']} by registry_backend = {spec!r}")
        else:
            shown = "<hidden>" if "password" in key else repr(error.get("input"))[:80]
            problems.append(f"{key} = {shown}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(problems)

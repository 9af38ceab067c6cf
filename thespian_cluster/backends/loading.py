"""Choosing a backend by name: ``local`` or a dotted path ``package.module:Class``."""

from __future__ import annotations

import importlib

from thespian_cluster.backends.behavior import RegistryBehavior
from thespian_cluster.backends.local import GlobalGroupsBackend, LocalBackend

BUILTIN_BACKENDS: dict[str, type[RegistryBehavior]] = {
    "local": LocalBackend,
    "global": GlobalGroupsBackend,
}


class BackendLoadError(RuntimeError):
    """``registry_backend`` names nothing usable; the message says why."""


def backend_class(spec: str) -> type[RegistryBehavior]:
    """The class ``spec`` names; raises :class:`BackendLoadError` with the reason."""
    if spec in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[spec]
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise BackendLoadError(
            f"registry_backend = {spec!r}: expected one of {sorted(BUILTIN_BACKENDS)} "
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

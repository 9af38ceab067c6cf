"""Registry backends: where names and groups live. See docs/backends.md."""

from thespian_cluster.backends.behavior import RegistryBehavior
from thespian_cluster.backends.loading import BackendLoadError, load_backend
from thespian_cluster.backends.local import GlobalGroupsBackend, LocalBackend

__all__ = [
    "BackendLoadError",
    "GlobalGroupsBackend",
    "LocalBackend",
    "RegistryBehavior",
    "load_backend",
]

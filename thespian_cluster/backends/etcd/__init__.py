"""The etcd backend: ``registry_backend = "etcd"`` (see docs/backends.md).

:class:`EtcdNodeBackend` is what the setting names: this node's local scope as
:class:`~thespian_cluster.backends.LocalBackend` keeps it, and ``scope="global"`` in
etcd through :class:`~.backend.EtcdBackend`, configured by ``[backend]``
(:class:`~.backend.EtcdConfig`).
"""

from thespian_cluster.backends.etcd.backend import EtcdBackend, EtcdConfig
from thespian_cluster.backends.local import LocalBackend


class EtcdNodeBackend(LocalBackend):
    """``registry_backend = "etcd"``: local names in memory, global names in etcd."""

    global_scope = EtcdBackend


__all__ = ["EtcdBackend", "EtcdConfig", "EtcdNodeBackend"]

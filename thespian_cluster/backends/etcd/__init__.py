"""The etcd backend: ``registry_backend = "etcd"`` (see docs/backends.md).

:class:`EtcdNodeBackend` is what the setting names: this node's local scope as
:class:`~thespian_cluster.backends.LocalBackend` keeps it, and ``scope="global"`` in
etcd through :class:`~.backend.EtcdBackend`, configured by ``[backend]``
(:class:`~.backend.EtcdConfig`). Beneath it, :mod:`.client` is a thin client of etcd's
v3 JSON gateway (standard library only, Thespian-free; the module says how the wire
dialect looks), whose calls the backend makes on its own threads, never an actor's.
"""

from thespian_cluster.backends.etcd.backend import EtcdBackend, EtcdConfig
from thespian_cluster.backends.etcd.client import (
    CasResult,
    Compare,
    Delete,
    Deleted,
    EtcdAuthError,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdInvalidRequest,
    EtcdLeaseNotFound,
    EtcdProtocolError,
    EtcdUnavailable,
    EtcdWatchCanceled,
    Get,
    Got,
    KeyValue,
    Lease,
    LeaseInfo,
    Member,
    Op,
    OpResult,
    Put,
    PutResult,
    Range,
    Status,
    TxnResult,
    Watch,
    WatchBatch,
    WatchEvent,
    error_from_reply,
    key_exists,
    key_missing,
    lease_is,
    mod_revision_is,
    prefix_range_end,
    value_is,
)
from thespian_cluster.backends.local import LocalBackend


class EtcdNodeBackend(LocalBackend):
    """``registry_backend = "etcd"``: local names in memory, global names in etcd."""

    global_scope = EtcdBackend


__all__ = [
    "CasResult",
    "Compare",
    "Delete",
    "Deleted",
    "EtcdAuthError",
    "EtcdBackend",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdConfig",
    "EtcdError",
    "EtcdInvalidRequest",
    "EtcdLeaseNotFound",
    "EtcdNodeBackend",
    "EtcdProtocolError",
    "EtcdUnavailable",
    "EtcdWatchCanceled",
    "Get",
    "Got",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "Member",
    "Op",
    "OpResult",
    "Put",
    "PutResult",
    "Range",
    "Status",
    "TxnResult",
    "Watch",
    "WatchBatch",
    "WatchEvent",
    "error_from_reply",
    "key_exists",
    "key_missing",
    "lease_is",
    "mod_revision_is",
    "prefix_range_end",
    "value_is",
]

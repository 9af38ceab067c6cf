"""thespian-cluster: Erlang/OTP's cluster toolkit for the Thespian actor framework.

Everything public is importable from here; the submodules are the implementation.
Every request, reply and event of the protocol is here too (and in
:mod:`thespian_cluster.messages`). ``__version__`` is the installed distribution's
version, whose one source is ``setup.cfg``.
"""

from importlib import metadata as _metadata

from thespian_cluster import messages as _messages
from thespian_cluster.actors.exit_hook import RegistryExitHook
from thespian_cluster.backends import (
    BackendLoadError,
    GlobalGroupsBackend,
    LocalBackend,
    RegistryBehavior,
)
from thespian_cluster.core.supervision import ChildSpec, RegisterAs
from thespian_cluster.core.table import Conflict, Entry, Member, Removal
from thespian_cluster.messages import *  # noqa: F403  (the protocol: its __all__)
from thespian_cluster.node import (
    AskTimeout,
    Node,
    NodeEntry,
    NodeError,
    NodeNotReady,
    NodeRefused,
    ask,
    connect,
    node_entry,
    registry_address,
    start_node,
    wait_ready,
)
from thespian_cluster.node_table import NotMirrored, TableReader, lookup
from thespian_cluster.settings import ClusterSettings, SettingsError
from thespian_cluster.supervisors.singleton import ClusterSingleton
from thespian_cluster.supervisors.supervisor import Supervisor

__all__ = [
    "AskTimeout",
    "BackendLoadError",
    "ChildSpec",
    "ClusterSettings",
    "ClusterSingleton",
    "Conflict",
    "Entry",
    "GlobalGroupsBackend",
    "LocalBackend",
    "Member",
    "Node",
    "NodeEntry",
    "NodeError",
    "NodeNotReady",
    "NodeRefused",
    "NotMirrored",
    "RegisterAs",
    "RegistryBehavior",
    "RegistryExitHook",
    "Removal",
    "SettingsError",
    "Supervisor",
    "TableReader",
    "ask",
    "connect",
    "lookup",
    "node_entry",
    "registry_address",
    "start_node",
    "wait_ready",
]
__all__ += _messages.__all__  # every public request, reply and event

try:
    __version__ = _metadata.version("thespian-cluster")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

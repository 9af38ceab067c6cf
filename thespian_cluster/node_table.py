"""The node-local shared table: the registry's contents on disk, readable by any process.

The Registry actor is the only writer. Every process on the host (other actors, the
CLI, a client script) can read it without sending a message, the way ETS tables
are read in Erlang; and a restarted Registry reloads it, so a SIGKILL of the
Registry loses no acknowledged registration.

Storage is LMDB: one writer, lock-free readers, crash-safe commits. py-lmdb refuses
an environment inherited through ``fork``, so every process opens its own handle
lazily (see :func:`_environment`).

Every commit bumps a version stored in the table (key ``v``) and then *publishes*
it in ``table/version``, a file of 8 bytes that readers map into memory. A reader
keeps a process-local cache of decoded entries, labelled with the published
version it was filled under, and answers from it without any LMDB transaction
while the file still holds that label (a few hundred nanoseconds a lookup instead
of a transaction and an unpickle). The rules that keep it right:

* the writer publishes only after its commit (under an ``flock`` on the file, so
  several writers publish in commit order); the Registry replies after that, so a
  lookup made after a ``Registered``/``Unregistered`` reply sees the change;
* a reader reads the file *before* it opens its transaction, and adopts a label
  only if it is not newer than the version in that transaction: every cached entry
  was read from a table at least as new as its label (a torn or early read of the
  file costs a cache miss, never a stale answer);
* a writer that starts (a restarted Registry) publishes the table's version again,
  repairing a file left behind by a writer killed between commit and publish;
* :func:`wipe` first writes a tombstone into the old file, so readers in other
  processes drop their handles on the old table and open the new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import mmap
import os
import pickle
import shutil
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster.core.limits import (
    MAX_TABLE_KEY_BYTES,
    MEMBER_PREFIX,
    NAME_PREFIX,
    member_key,
    name_key,
    name_key_body,
)
from thespian_cluster.core.replica import MirrorUpdate
from thespian_cluster.core.table import Entry, Member, Name, Removal

MAP_SIZE = 1 << 32  # sparse: only what is written takes disk
_VERSION_KEY = b"v"
_NODE_DIR_ENV = "THESPIAN_CLUSTER_NODE_DIR"  # set by start_node for every process of a node
_NAME_PREFIX = NAME_PREFIX
_MEMBER_PREFIX = MEMBER_PREFIX
_REGISTRY_KEY = b"r"
# The global scope's replica (written by RegistryDist) beside the local names: the same
# key encodings under another prefix of the same length, so the key limits agree.
_GLOBAL_NAME_PREFIX = b"N:"
_GLOBAL_MEMBER_PREFIX = b"M:"
_AGENT_PREFIX = b"a:"
_EVENTS_PREFIX = b"e:"  # + scope + NUL + a digest: event subscriptions and waits
_UNMIRRORED_KEY = b"u"  # set: the global backend does not feed the mirror (its name)
_PICKLE = pickle.HIGHEST_PROTOCOL
VERSION_FILE = "version"
_VERSION = struct.Struct("<Q")
_RETIRED = (1 << 64) - 1  # the tombstone wipe() publishes into the old table's file
#: A reader's cache is emptied when it reaches this many entries (misses included).
CACHE_LIMIT = 1 << 20

_environments: dict[tuple[int, str], Any] = {}


def _environment(path: Path) -> Any:
    key = (os.getpid(), str(path))
    env = _environments.get(key)
    if env is None:
        _close_inherited(str(path))
        path.mkdir(parents=True, exist_ok=True)
        # No fsync: the table must survive a crash of the Registry's process (the OS
        # keeps committed pages), not of the host, whose actors die with it anyway.
        env = lmdb.open(
            str(path), map_size=MAP_SIZE, max_dbs=0, lock=True, sync=False, metasync=False
        )
        if env.max_key_size() < MAX_TABLE_KEY_BYTES:  # a liblmdb built with smaller keys
            env.close()
            raise RuntimeError(
                f"this LMDB takes keys of {env.max_key_size()} bytes; the node table "
                f"needs {MAX_TABLE_KEY_BYTES} (core/limits.py)"
            )
        _environments[key] = env
    return env


def _close_inherited(path: str) -> None:
    """Close the environments of ``path`` this process inherited from its parent.

    Thespian forks every actor from its parent's process, so an actor whose parent had
    the table open inherits that environment, which LMDB forbids using after a fork and
    py-lmdb 3 counts as open in this process (it refuses a second open of the same
    files). Closing the inherited copy touches only this process: LMDB clears the
    reader slots of the calling pid alone, and this process holds none of the parent's
    fcntl locks.
    """
    pid = os.getpid()
    for key in [k for k in _environments if k[1] == path and k[0] != pid]:
        _environments.pop(key).close()


class _TablePickler(pickle.Pickler):
    """Stores a TCP actor address as its (ip, port): 20 bytes instead of ~260."""

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is ActorAddress and type(obj.addressDetails) is TCPv4ActorAddress:
            return obj.addressDetails.sockname[:2]
        return None


class _TableUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        return _address(*pid)


_addresses: dict[tuple[str, int], ActorAddress] = {}


def _address(ip: str, port: int) -> ActorAddress:
    """The address at (ip, port), built as Thespian builds one from a string; memoized."""
    address = _addresses.get((ip, port))
    if address is None:
        if len(_addresses) > 100_000:
            _addresses.clear()
        address = ActorAddress(TCPv4ActorAddress(ip, port, external=True))
        _addresses[(ip, port)] = address
    return address


def address_at(ip: str, port: int) -> ActorAddress:
    """The actor address at ``ip:port`` (for stores that keep addresses as text)."""
    return _address(ip, port)


def _encode(value: Any) -> bytes:
    buffer = io.BytesIO()
    _TablePickler(buffer, protocol=_PICKLE).dump(value)
    return buffer.getvalue()


def _decode(raw: bytes) -> Any:
    return _TableUnpickler(io.BytesIO(raw)).load()


# A global entry's value in its compact form (GlobalMirror): this byte, then a plain
# pickle of the entry's fields but (kind, name), which its key holds. A value without it
# is a pickled Entry (an address other than TCP's, or a table of an older version).
_COMPACT = b"\x01"


def _encode_global(entry: Entry) -> bytes:
    """The global mirror's value for ``entry``: ~60 bytes instead of ~156 (no class
    name, no kind or name, the address as its (ip, port)), and ~10x faster to make
    than :func:`_encode` (no Python hook per object)."""
    address = entry.address
    if type(address) is ActorAddress and type(address.addressDetails) is TCPv4ActorAddress:
        ip, port = address.addressDetails.sockname[:2]
        epoch, seq = entry.version
        fields = (ip, port, entry.node, entry.incarnation, entry.meta, entry.registered_at)
        try:
            return _COMPACT + pickle.dumps((*fields, epoch, seq), _PICKLE)
        except Exception:  # a meta that only the table's pickler can write
            pass
    return _encode(entry)


def _decode_global(raw: bytes, kind: str, name: Name) -> Any:
    """The record stored under the global key of ``(kind, name)``: an :class:`Entry`
    (or whatever an unreadable value holds, for the caller to refuse)."""
    if raw[:1] != _COMPACT:
        return _decode(raw)
    ip, port, node, incarnation, meta, stamp, epoch, seq = pickle.loads(raw[1:])
    return Entry(name, kind, _address(ip, port), node, meta, stamp, incarnation, (epoch, seq))


def _global_key_fields(key: bytes) -> tuple[str, Name]:
    """(kind, name) of a global name key (see :func:`_global_name_key`)."""
    kind, name = pickle.loads(key[len(_GLOBAL_NAME_PREFIX) :])
    return kind, name


# The key encodings are shared with the message validators (core/limits.py).
_name_key = name_key
_member_key = member_key


def _global_name_key(kind: str, name: Name) -> bytes:
    # name_key's encoding under the global prefix (the same length: the same limits)
    return _GLOBAL_NAME_PREFIX + name_key_body(kind, name)


def _global_member_key(group: str, address: Any) -> bytes:
    return _GLOBAL_MEMBER_PREFIX + member_key(group, address)[len(_MEMBER_PREFIX) :]


#: Says why a decoded record must not be kept (None: keep it); see TableWriter.load.
Check = Callable[[Any], "str | None"]


@dataclass
class Loaded:
    """What :meth:`TableWriter.load` found: the records kept, and those it dropped."""

    entries: list[Entry] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    #: (the record's key, why it was dropped), one per record removed from the table
    dropped: list[tuple[bytes, str]] = field(default_factory=list)


class NotMirrored(LookupError):
    """``lookup(scope="global")`` on a node whose global backend does not feed the node
    table (``feeds_node_table = False``): nothing local can answer. Ask the node's
    Registry (``Whereis(name, scope="global")``), which hands the read to the backend."""

    def __init__(self, backend: str) -> None:
        super().__init__(
            f"this node's global backend ({backend}) does not feed the node table, so "
            f"lookup(scope='global') cannot answer: send Whereis(scope='global') to the "
            f"node's Registry"
        )
        self.backend = backend


def table_path(node_dir: Path) -> Path:
    return node_dir / "table"


def wipe(node_dir: Path) -> None:
    """Forget a previous incarnation's table (its actors are gone with it).

    Readers elsewhere still map the old files: the tombstone tells them to reopen.
    """
    path = table_path(node_dir)
    if (path / VERSION_FILE).exists():
        tombstone = _VersionFile(path)
        try:
            tombstone.publish(_RETIRED)
        finally:
            tombstone.close()
    _environments.pop((os.getpid(), str(path)), None)
    shutil.rmtree(path, ignore_errors=True)


class _VersionFile:
    """The writer's handle on ``table/version``: publish a version, serialise writers."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path / VERSION_FILE, os.O_RDWR | os.O_CREAT, 0o644)

    def locked(self) -> _FileLock:
        return _FileLock(self._fd)

    def publish(self, version: int) -> None:
        with self.locked():
            self.publish_locked(version)

    def publish_locked(self, version: int) -> None:
        os.pwrite(self._fd, _VERSION.pack(version), 0)

    def close(self) -> None:
        os.close(self._fd)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class TableWriter:
    """The Registry's side: record each change and bump the version in one commit, then
    publish the version for readers (see the module docstring)."""

    def __init__(self, node_dir: Path) -> None:
        path = table_path(node_dir)
        self._env = _environment(path)
        self._version_file = _VersionFile(path)
        # A restarted writer repairs a file its predecessor died before updating.
        with self._version_file.locked(), self._env.begin() as txn:
            self._version_file.publish_locked(_stored_version(txn))

    def load(self, check_entry: Check | None = None, check_member: Check | None = None) -> Loaded:
        """Every name and membership in the table, for a (re)starting Registry.

        A record is dropped, and deleted from the table in one commit, when it does not
        decode, is not an :class:`Entry` / :class:`Member`, is stored under another key
        than its own (the key is derived from its fields), or when ``check_entry`` /
        ``check_member`` gives a reason. A table written by an older, less careful
        version then heals on the first start instead of failing every listing.
        """
        loaded = Loaded()
        with self._env.begin() as txn:
            for key, value in txn.cursor():
                if key.startswith(_NAME_PREFIX):
                    kept, reason = _checked(key, value, Entry, check_entry)
                    if kept is not None:
                        loaded.entries.append(kept)
                elif key.startswith(_MEMBER_PREFIX):
                    kept, reason = _checked(key, value, Member, check_member)
                    if kept is not None:
                        loaded.members.append(kept)
                else:
                    continue
                if reason is not None:
                    loaded.dropped.append((bytes(key), reason))
        if loaded.dropped:
            with self._version_file.locked():
                with self._env.begin(write=True) as txn:
                    for key, _ in loaded.dropped:
                        txn.delete(key)
                    version = self._bump(txn)
                self._version_file.publish_locked(version)
        return loaded

    def write(
        self,
        entries: Iterable[Entry] = (),
        removed_names: Iterable[tuple[str, Name]] = (),
        members: Iterable[Member] = (),
        removed_members: Iterable[tuple[str, Any]] = (),
    ) -> int:
        """Record these changes in one commit; the table's version after it."""
        with self._version_file.locked():
            with self._env.begin(write=True) as txn:
                for entry in entries:
                    txn.put(_name_key(entry.kind, entry.name), _encode(entry))
                for kind, name in removed_names:
                    txn.delete(_name_key(kind, name))
                for member in members:
                    txn.put(
                        _member_key(member.group, member.address),
                        _encode(member),
                    )
                for group, address in removed_members:
                    txn.delete(_member_key(group, address))
                version = self._bump(txn)
            self._version_file.publish_locked(version)  # after the commit, never before
        return version

    def write_removal(self, removal: Removal, address: Any) -> int:
        return self.write(
            removed_names=[e.key for e in removal.names],
            removed_members=[(g, address) for g in removal.groups],
        )

    def set_registry(self, address: Any) -> None:
        """Publish the Registry's own address for actors and clients on this host."""
        self._commit_put(_REGISTRY_KEY, _encode(address))

    def _commit_put(self, key: bytes, value: bytes) -> None:
        with self._version_file.locked():
            with self._env.begin(write=True) as txn:
                txn.put(key, value)
                version = self._bump(txn)
            self._version_file.publish_locked(version)

    def version(self) -> int:
        """The table's version now (every writer's commits count)."""
        with self._env.begin() as txn:
            return _stored_version(txn)

    @staticmethod
    def _bump(txn: Any) -> int:
        version = _stored_version(txn) + 1
        txn.put(_VERSION_KEY, _VERSION.pack(version))
        return version

    # ---- the subscriptions and waits of a scope's events (actors/event_service.py) ---
    # Written without bumping the version: no name changes, so readers' caches stay.

    def put_event_record(self, scope: str, key: Any, record: Any) -> None:
        """Keep ``record`` (a subscription or a wait) under ``key`` for a restarted host."""
        with self._env.begin(write=True) as txn:
            txn.put(_event_key(scope, key), _encode(record))

    def drop_event_records(self, scope: str, keys: Iterable[Any], raw: bool = False) -> None:
        """Forget the records under ``keys`` (``raw``: LMDB keys, as
        :meth:`event_records` gives them) in one commit."""
        with self._env.begin(write=True) as txn:
            for key in keys:
                txn.delete(key if raw else _event_key(scope, key))

    def event_records(self, scope: str) -> list[tuple[bytes, Any]]:
        """``(LMDB key, record)`` of every record kept for ``scope``; a record that does
        not decode comes as ``(key, None)``."""
        with self._env.begin() as txn:
            return _event_records(txn, scope)


class GlobalMirror(TableWriter):
    """RegistryDist's side: the global replica, mirrored into the node table after every
    change, so ``lookup(scope="global")`` and the Registry's global reads need no
    message, and a restarted RegistryDist finds what its node owns.

    A second writer of the same LMDB environment: LMDB serialises the two writers'
    transactions and the version file's lock orders their publications.
    """

    def write_update(self, update: MirrorUpdate) -> int | None:
        """Bring the mirror to the replica's state after one apply or install, in one
        commit (see :class:`~thespian_cluster.core.replica.MirrorUpdate`).

        Args:
            update: from :func:`~thespian_cluster.core.replica.mirror_update`.

        Returns:
            The table's version after the commit (None: nothing to write).
        """
        if not update:
            return None

        def change(txn: Any) -> None:
            for kind, name in update.dropped_names:
                txn.delete(_global_name_key(kind, name))
            for entry in update.entries:
                txn.put(_global_name_key(entry.kind, entry.name), _encode_global(entry))
            for group, address in update.dropped_members:
                txn.delete(_global_member_key(group, address))
            for member in update.members:
                txn.put(_global_member_key(member.group, member.address), _encode(member))

        return self._commit(change)

    def replace(self, entries: Iterable[Entry], members: Iterable[Member]) -> int:
        """Make the mirror hold exactly ``entries`` and ``members``."""

        def rewrite(txn: Any) -> None:
            for prefix in (_GLOBAL_NAME_PREFIX, _GLOBAL_MEMBER_PREFIX):
                for key in _keys_under(txn, prefix):
                    txn.delete(key)
            for entry in entries:
                txn.put(_global_name_key(entry.kind, entry.name), _encode_global(entry))
            for member in members:
                txn.put(_global_member_key(member.group, member.address), _encode(member))

        return self._commit(rewrite)

    def declare(self, fed: bool, backend: str) -> None:
        """Say whether the global backend (named ``backend``) keeps this mirror. An
        unfed mirror is emptied, and every global read of it raises :class:`NotMirrored`
        until a feeding backend declares itself."""

        def mark(txn: Any) -> None:
            if fed:
                txn.delete(_UNMIRRORED_KEY)
                return
            for prefix in (_GLOBAL_NAME_PREFIX, _GLOBAL_MEMBER_PREFIX):
                for key in _keys_under(txn, prefix):
                    txn.delete(key)
            txn.put(_UNMIRRORED_KEY, backend.encode())

        self._commit(mark)

    def owned_by(self, node: str, incarnation: str) -> tuple[list[Entry], list[Member]]:
        """The mirrored entries and members of one node incarnation."""
        with self._env.begin() as txn:
            entries, members = _global_records(txn)
        return (
            [e for e in entries if (e.node, e.incarnation) == (node, incarnation)],
            [m for m in members if (m.node, m.incarnation) == (node, incarnation)],
        )

    def _commit(self, change: Callable[[Any], None]) -> int:
        with self._version_file.locked():
            with self._env.begin(write=True) as txn:
                change(txn)
                version = self._bump(txn)
            self._version_file.publish_locked(version)
        return version


def publish_agent(node_dir: Path, role: str, address: Any) -> None:
    """Record where this node's ``role`` actor (``registry_dist``, ``node_monitor``,
    ...) is now, for the Registry to forward requests to it."""
    writer = TableWriter(node_dir)
    writer._commit_put(_AGENT_PREFIX + role.encode(), _encode(address))


def _keys_under(txn: Any, prefix: bytes) -> list[bytes]:
    keys = []
    cursor = txn.cursor()
    if cursor.set_range(prefix):
        for key in cursor.iternext(keys=True, values=False):
            if not bytes(key).startswith(prefix):
                break
            keys.append(bytes(key))
    return keys


def _global_records(txn: Any) -> tuple[list[Entry], list[Member]]:
    """The global scope's records in ``txn``; unreadable ones are skipped (the next
    snapshot rewrites them)."""
    entries: list[Entry] = []
    members: list[Member] = []
    for key in _keys_under(txn, _GLOBAL_NAME_PREFIX):
        try:
            record = _decode_global(txn.get(key), *_global_key_fields(key))
        except Exception:  # unreadable: skipped
            continue
        if type(record) is Entry:
            entries.append(record)
    for key in _keys_under(txn, _GLOBAL_MEMBER_PREFIX):
        record = _decoded(txn.get(key))
        if type(record) is Member:
            members.append(record)
    return entries, members


def _decoded(raw: bytes | None) -> Any:
    try:
        return _decode(raw) if raw is not None else None
    except Exception:  # unreadable: the caller skips it
        return None


def _checked(key: bytes, raw: bytes, kind: type, check: Check | None) -> tuple[Any, str | None]:
    """(the decoded record, None) if it may be kept, else (None, why not)."""
    try:
        record = _decode(raw)
    except Exception as exc:  # any unpickling failure: the record is unreadable
        return None, f"does not decode: {type(exc).__name__}: {exc}"
    if type(record) is not kind:
        return None, f"holds a {type(record).__name__}, not a {kind.__name__}"
    problem = check(record) if check is not None else None
    if problem is None:
        try:  # the key is derived from the fields: a mismatch is a record nobody can find
            own = _own_key(record)
        except Exception as exc:  # fields that do not even pickle
            problem = f"has no key of its own: {type(exc).__name__}"
        else:
            problem = None if own == bytes(key) else "is stored under another key than its own"
    return (None, problem) if problem is not None else (record, None)


def _own_key(record: Any) -> bytes:
    """The key a record is written under (see TableWriter.write)."""
    if isinstance(record, Entry):
        return name_key(record.kind, record.name)
    return member_key(record.group, record.address)


def _stored_version(txn: Any) -> int:
    raw = txn.get(_VERSION_KEY)
    return int(_VERSION.unpack(raw)[0]) if raw else 0


_MISSING: Any = object()


class TableReader:
    """Any process's side: ``lookup()`` without a message, from a cache kept valid by
    the published table version (see the module docstring)."""

    def __init__(self, node_dir: Path, cache_limit: int = CACHE_LIMIT) -> None:
        self._path = table_path(node_dir)
        self._cache_limit = cache_limit
        self._map: mmap.mmap | None = None  # table/version, once a writer has made it
        self._label: bytes | None = None  # the published version the cache is valid for
        self._cache: dict[str, dict[Name, Entry | None]] = {}  # kind -> name -> entry
        self._cached = 0  # entries in the cache, misses included

    def lookup(self, name: Name, kind: str = "server", scope: str = "local") -> Entry | None:
        """The entry registered as ``name`` in ``scope``, or None; never sends a message.

        ``scope="global"`` reads this node's replica of the cluster-wide table, or
        raises :class:`NotMirrored` if the node's global backend keeps none.
        """
        published = self._map
        if published is not None and published[:8] == self._label:
            # per kind (and scope): no key tuple to build and compare
            names = self._cache.get(kind if scope == "local" else "\0" + kind)
            if names is not None:
                entry = names.get(name, _MISSING)
                if entry is not _MISSING:
                    return entry
        return self._read(name, kind, scope)

    def _read(self, name: Name, kind: str, scope: str = "local") -> Entry | None:
        """The slow path: validate the cache, then read the entry from LMDB."""
        key = _name_key(kind, name) if scope == "local" else _global_name_key(kind, name)
        if len(key) > MAX_TABLE_KEY_BYTES:  # LMDB would raise; such a name is never stored
            return None
        published = self._published()  # read before the transaction: see the docstring
        if published != self._label:
            self._clear()
            self._label = None
        with _environment(self._path).begin(buffers=False) as txn:
            if (
                self._label is None
                and published is not None
                and _VERSION.unpack(published)[0] <= _stored_version(txn)
            ):
                self._label = published  # every entry read from now on is at least as new
            if scope != "local":
                _check_mirrored(txn)
            raw = txn.get(key)
        entry: Entry | None = None
        if raw is not None:
            entry = _decode(raw) if scope == "local" else _decode_global(raw, kind, name)
        if self._label is not None:
            if self._cached >= self._cache_limit:
                self._clear()
            self._cache.setdefault(kind if scope == "local" else "\0" + kind, {})[name] = entry
            self._cached += 1
        return entry

    def _clear(self) -> None:
        self._cache.clear()
        self._cached = 0

    def _published(self) -> bytes | None:
        """The version in ``table/version`` (mapping it first if need be); None if absent."""
        if self._map is None:
            self._map = _map_version_file(self._path)
            if self._map is None:
                return None
        published = self._map[:8]
        if _VERSION.unpack(published)[0] == _RETIRED:  # wiped: a new table, new files
            self._map.close()
            self._map = None
            _environments.pop((os.getpid(), str(self._path)), None)
            self._map = _map_version_file(self._path)
            return self._map[:8] if self._map is not None else None
        return published

    def records(self) -> tuple[list[Any], list[Any]]:
        """(every record under a name key, every record under a member key), decoded,
        unchecked: what a test or a diagnosis needs to see what is really stored."""
        names: list[Any] = []
        members: list[Any] = []
        with _environment(self._path).begin(buffers=False) as txn:
            for key, raw in txn.cursor():
                if key.startswith(_NAME_PREFIX):
                    names.append(_decode(raw))
                elif key.startswith(_MEMBER_PREFIX):
                    members.append(_decode(raw))
        return names, members

    def global_records(self) -> tuple[list[Entry], list[Member]]:
        """Every global entry and explicit membership of this node's replica
        (:class:`NotMirrored` if its global backend keeps none)."""
        with _environment(self._path).begin(buffers=False) as txn:
            _check_mirrored(txn)
            return _global_records(txn)

    def event_records(self, scope: str) -> list[Any]:
        """The subscriptions and waits kept for ``scope`` (what a test or a diagnosis
        needs to see)."""
        with _environment(self._path).begin() as txn:
            return [record for _, record in _event_records(txn, scope)]

    def agent(self, role: str) -> Any | None:
        """Where this node's ``role`` actor is, as it last published (None: unknown)."""
        with _environment(self._path).begin() as txn:
            raw = txn.get(_AGENT_PREFIX + role.encode())
        return _decode(raw) if raw is not None else None

    def registry(self) -> Any | None:
        """The address of this node's Registry actor, if one has published it."""
        with _environment(self._path).begin() as txn:
            raw = txn.get(_REGISTRY_KEY)
        return _decode(raw) if raw is not None else None


def _event_records(txn: Any, scope: str) -> list[tuple[bytes, Any]]:
    return [
        (key, _decoded(txn.get(key)))
        for key in _keys_under(txn, _EVENTS_PREFIX + scope.encode() + b"\0")
    ]


def _event_key(scope: str, key: Any) -> bytes:
    # A digest: a topic's prefix or group may be 255 characters, LMDB keys stop at 511.
    digest = hashlib.blake2b(repr(key).encode(), digest_size=20).hexdigest()
    return _EVENTS_PREFIX + scope.encode() + b"\0" + digest.encode()


def _check_mirrored(txn: Any) -> None:
    unmirrored = txn.get(_UNMIRRORED_KEY)
    if unmirrored is not None:
        raise NotMirrored(bytes(unmirrored).decode(errors="replace"))


def _map_version_file(path: Path) -> mmap.mmap | None:
    try:
        fd = os.open(path / VERSION_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size < _VERSION.size:
            return None
        return mmap.mmap(fd, _VERSION.size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


_readers: dict[str, TableReader] = {}


def lookup(
    name: Name, kind: str = "server", scope: str = "local", node_dir: Path | str | None = None
) -> Entry | None:
    """Who holds ``name`` (an :class:`Entry`, or None), read from the node table of this
    host's node without any message: from an actor of the node (it knows its node) or
    any process given the node's directory (``settings.node_dir``).

    ``scope="global"`` reads the node's replica of the cluster-wide table; a node whose
    global backend keeps none (``feeds_node_table = False``) raises
    :class:`NotMirrored` rather than answer None for a name it cannot see. About a
    microsecond per call once warm (a process-local cache checked against the table's
    published version).
    """
    where = str(node_dir) if node_dir is not None else os.environ.get(_NODE_DIR_ENV)
    if not where:
        raise ValueError("lookup() outside a node's process needs node_dir=settings.node_dir")
    reader = _readers.get(where)
    if reader is None:
        reader = _readers[where] = TableReader(Path(where))
    return reader.lookup(name, kind, scope)


def table_bytes(node_dir: Path) -> int:
    """Bytes of LMDB pages in use in the node's table (not the sparse file's size)."""
    env = _environment(table_path(node_dir))
    info, stat = env.info(), env.stat()
    return int((info["last_pgno"] + 1) * stat["psize"])

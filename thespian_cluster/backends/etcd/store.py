"""``EtcdStore``: the handful of etcd operations the backend needs, on :class:`EtcdClient`.

Every call blocks (the backend makes them from its own threads, never the actor's)
and ends within the configured ``timeout`` per endpoint tried. Errors come as two
types: :class:`StoreUnavailable` (etcd unreachable, no leader, no quorum, timed out:
the write is answered ``unavailable``) and :class:`StoreError` (anything else).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thespian_cluster.backends.etcd.client import (
    Delete,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    Get,
    KeyValue,
    Put,
    Range,
    key_missing,
    mod_revision_is,
)
from thespian_cluster.backends.etcd.view import Change

if TYPE_CHECKING:
    from thespian_cluster.backends.etcd.backend import EtcdConfig


class StoreError(RuntimeError):
    """etcd refused or failed an operation."""


class StoreUnavailable(StoreError):
    """etcd cannot be reached, or has no quorum: try again later."""


class EtcdStore:
    """See the module docstring. One per backend; safe to call from several threads."""

    def __init__(self, config: EtcdConfig) -> None:
        self._client = EtcdClient(
            list(config.endpoints),
            timeout=config.timeout,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            ca_file=str(config.ca_file) if config.ca_file else None,
            cert_file=str(config.cert_file) if config.cert_file else None,
            key_file=str(config.key_file) if config.key_file else None,
        )
        self._watch: Any = None
        self._watch_lock = threading.Lock()

    # ---- names and members ----------------------------------------------------------------

    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, KeyValue | None, int]:
        """Put ``key`` only where it does not exist: ``(created, current, revision)``."""
        result = _call(lambda: self._client.create(key, value, lease=lease))
        return result.succeeded, result.current, result.revision

    def create_all(
        self, items: list[tuple[str, bytes]], lease: int
    ) -> tuple[bool, dict[str, KeyValue], int]:
        """Put every ``(key, value)`` in one transaction, only if none of the keys exists:
        ``(created, current, revision)``. When one exists nothing is written and
        ``current`` maps each existing key to its record (the caller decides those and
        tries the rest again). The keys must be distinct (etcd refuses a txn that puts
        one key twice) and at most etcd's ``--max-txn-ops``."""
        keys = [key for key, _ in items]
        result = _call(
            lambda: self._client.txn(
                [key_missing(key) for key in keys],
                [Put(key, value, lease) for key, value in items],
                [Get(key) for key in keys],
            )
        )
        if result.succeeded:
            return True, {}, result.revision
        current = {
            kv.key.decode(): kv
            for found in result.responses
            if isinstance(found, Range)
            for kv in found.records
        }
        return False, current, result.revision

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int) -> tuple[bool, int]:
        """Put ``key`` only if it is still at ``mod_revision``: ``(done, revision)``."""
        result = _call(lambda: self._client.replace(key, value, mod_revision, lease=lease))
        return result.succeeded, result.revision

    def delete_if(self, key: str, mod_revision: int) -> tuple[bool, int]:
        """Delete ``key`` only if it is still at ``mod_revision``: ``(done, revision)``."""
        result = _call(lambda: self._client.delete_if(key, mod_revision))
        return result.succeeded, result.revision

    def delete_all_if(self, keys: list[tuple[str, int]]) -> tuple[bool, int]:
        """Delete every ``(key, mod_revision)`` in one transaction, only if each is still
        at its revision: ``(done, revision)``. One revision: watchers see it whole."""
        compares = [mod_revision_is(key, revision) for key, revision in keys]
        deletes = [Delete(key) for key, _ in keys]
        result = _call(lambda: self._client.txn(compares, deletes))
        return result.succeeded, result.revision

    def get(self, key: str) -> KeyValue | None:
        return _call(lambda: self._client.get(key)).record

    def put(self, key: str, value: bytes, lease: int) -> int:
        """Put ``key`` (on ``lease``); the revision of the write."""
        return _call(lambda: self._client.put(key, value, lease=lease))

    def delete(self, key: str) -> tuple[bool, int]:
        """Delete ``key``: ``(it existed, revision)``."""
        deleted = _call(lambda: self._client.delete(key))
        return deleted.count > 0, deleted.revision

    def listing(self, prefix: str) -> tuple[list[Change], int]:
        """Every key under ``prefix`` as changes, and the revision of the listing."""
        records, revision = _call(lambda: self._client.get_prefix(prefix))
        changes = [Change(r.key.decode(), r.mod_revision, r.value, r.lease) for r in records]
        return changes, revision

    # ---- leases ---------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return int(_call(lambda: self._client.grant(ttl)).id)

    def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL after refreshing it; 0 when etcd no longer has it."""
        return int(_call(lambda: self._client.keepalive_once(lease)))

    def revoke(self, lease: int) -> bool:
        return bool(_call(lambda: self._client.revoke(lease)))

    # ---- the watch --------------------------------------------------------------------------

    def watch(
        self,
        prefix: str,
        start_revision: int,
        deliver: Callable[[list[Change], int], None],
        stop: threading.Event,
    ) -> None:
        """Stream changes under ``prefix`` from ``start_revision`` to ``deliver(changes,
        revision)`` until ``stop`` is set or :meth:`close_watch`; raises
        :class:`StoreError` when the stream breaks or the revision was compacted (the
        caller lists again)."""
        watch = _call(
            lambda: self._client.watch(prefix, prefix=True, start_revision=start_revision)
        )
        with self._watch_lock:
            self._watch = watch
        try:
            for batch in watch:
                if stop.is_set():
                    return
                changes = [
                    Change(
                        e.kv.key.decode(),
                        e.kv.mod_revision,
                        None if e.type == "DELETE" else e.kv.value,
                        e.kv.lease,
                    )
                    for e in batch.events
                ]
                deliver(changes, batch.revision)
        except EtcdCompacted as exc:
            raise StoreError(f"watch revision compacted (now {exc.compact_revision})") from None
        except EtcdUnavailable as exc:
            raise StoreUnavailable(f"watch broke: {exc}") from None
        except EtcdError as exc:
            raise StoreError(f"watch failed: {exc}") from None
        finally:
            with self._watch_lock:
                self._watch = None
            watch.close()
        if not stop.is_set():
            raise StoreUnavailable("the watch ended")

    def close_watch(self) -> None:
        """Make a running :meth:`watch` return now (from any thread)."""
        with self._watch_lock:
            watch = self._watch
        if watch is not None:
            watch.close()


def _call(operation: Callable[[], Any]) -> Any:
    try:
        return operation()
    except EtcdUnavailable as exc:
        raise StoreUnavailable(str(exc)) from None
    except EtcdError as exc:
        raise StoreError(str(exc)) from None

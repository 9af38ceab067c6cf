"""``EtcdBackend``: the global scope in etcd (``registry_backend = "etcd"``).

For teams that run etcd already: names are unique by an etcd transaction, so they
are linearizable, and a node cut off from etcd's quorum refuses global writes instead
of merging after the heal. See docs/backends.md for when to choose it over the
built-in backend, and :mod:`.view` for the layout of the keys.

How it works, on each node:

* **one lease per node**, granted at start and kept alive by a thread every
  ``lease_ttl / 3`` seconds; every name and membership this node writes is attached
  to it, so etcd cleans up after a node that dies even if no other node noticed. A
  survivor whose node monitor sees ``NodeDown`` revokes the dead node's lease at once
  (its lease id is in ``<prefix>node/<name>``), so its names go within a round trip,
  not a TTL.
* **writes** run on ``write_threads`` worker threads (a key always on the same one, so
  one key's writes keep their order), never in the actor: the host's
  :class:`~thespian_cluster.backends.scope.Deferred` is resolved when the answer comes
  back. ``Register`` is a transaction that creates the key only where it does not
  exist (``create_revision == 0``); the loser learns the real owner. Meta updates and
  releases compare the key's ``mod_revision``, so they never touch a newer owner's key.
* **reads** need no message: a watch thread streams the prefix from the revision of
  the first listing into the node table's global mirror; after a compaction or a
  broken stream it lists again. A write's own answer reaches the mirror before the
  client is answered (read your writes on the origin), and an older event is never
  applied over a newer record (:class:`.view.EtcdView`).
* **etcd unreachable or without quorum**: writes answer ``RegistryError(unavailable)``
  within ``timeout`` (per endpoint tried); reads keep coming from the node table, and
  ``GetGlobalStatus`` says since when the watch has been down. A node whose lease
  expired (cut off longer than ``lease_ttl``) sends each owner it hosted a
  :class:`~thespian_cluster.global_messages.NameLost` with the reason, and registers
  nothing again by itself.

Threads hand their results to the actor through a queue and
:meth:`~thespian_cluster.backends.scope.ScopeHost.wake`; only the actor's thread
touches the view and the mirror.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from thespian_cluster.backends.batches import Gathered, write_items
from thespian_cluster.backends.etcd.client import KeyValue
from thespian_cluster.backends.etcd.store import EtcdStore, StoreError, StoreUnavailable
from thespian_cluster.backends.etcd.view import (
    Change,
    EtcdView,
    RecordError,
    entry_value,
    member_key,
    member_value,
    name_key,
    node_key,
    node_value,
)
from thespian_cluster.backends.scope import Deferred, GlobalBackend, ScopeHost
from thespian_cluster.cluster_messages import ClusterView
from thespian_cluster.core import reasons as why
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.replica import MirrorUpdate, NodeId
from thespian_cluster.core.sequencer import Resolver
from thespian_cluster.core.table import Entry, Member
from thespian_cluster.global_messages import GlobalStatus, NameLost
from thespian_cluster.messages import (
    AlreadyRegistered,
    ErrorCode,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    MetaUpdated,
    Register,
    Registered,
    RegistryError,
    Reply,
    Request,
    Unregister,
    Unregistered,
    UpdateMeta,
)
from thespian_cluster.node_table import address_at
from thespian_cluster.validation import revalidate

_T = TypeVar("_T")

#: Bytes of keys and values one bulk transaction may carry: etcd refuses requests over
#: its --max-request-bytes (1.5 MiB by default), and the JSON gateway adds a third.
TXN_BYTES = 1 << 20
RETRY_AFTER = 0.5  # seconds between attempts to reach etcd again (session, lease)
RETRY_PAUSE = 0.2  # seconds between attempts of a write while etcd is unavailable
_MAX_REMEMBERED = 10_000  # dead owners and down nodes kept for event reasons


class EtcdConfig(BaseModel):
    """``[backend]`` of ``registry_backend = "etcd"`` (docs/operations.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:2379"], min_length=1)
    prefix: str = Field("/thespian-cluster/", min_length=1)
    lease_ttl: int = Field(10, ge=2, le=3600, description="seconds a silent node's names live")
    timeout: float = Field(2.0, gt=0, le=60, description="seconds per etcd request")
    write_threads: int = Field(4, ge=1, le=64)
    txn_ops: int = Field(
        128, ge=1, le=100_000, description="most names one bulk transaction creates"
    )
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, endpoints: list[str]) -> list[str]:
        for url in endpoints:
            scheme, sep, rest = url.partition("://")
            if scheme not in ("http", "https") or not sep or not rest:
                raise ValueError(f"{url!r} is not http://host:port or https://host:port")
        return endpoints

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix.endswith("/"):
            raise ValueError("must end with '/' (it is a directory of keys)")
        return prefix


# ---- what the threads hand to the actor ------------------------------------------------


@dataclass
class _Answered:
    """A worker's answer to one item of a client's request (on ``key``; ``bulk``: the
    item was written in a bulk transaction, see :meth:`EtcdBackend._bulk`)."""

    request: Gathered
    index: int
    reply: Reply
    changes: list[Change] = field(default_factory=list)
    key: str = ""
    bulk: bool = False


class _Failed(NamedTuple):
    """A write etcd did not take, as the item's error."""

    code: ErrorCode
    detail: str


@dataclass
class _Listed:
    changes: list[Change]
    revision: int


@dataclass
class _Watched:
    changes: list[Change]
    revision: int


@dataclass
class _Session:
    """The session thread's news: a lease (0: lost), or the watch up or down."""

    lease: int | None = None
    watching: bool | None = None
    why: str = ""


class EtcdBackend(GlobalBackend):
    """See the module docstring."""

    config_model = EtcdConfig
    catches_up = True  # the mirror is empty until the first listing

    def __init__(self, host: ScopeHost, config: BaseModel) -> None:
        super().__init__(host, config)
        assert isinstance(config, EtcdConfig)
        self.settings: EtcdConfig = config
        self.me: NodeId = host.node
        self.view = EtcdView(config.prefix, address_at)
        self.store = EtcdStore(config)
        self.lease = 0  # this node's lease; 0 until granted (and after it is lost)
        self.outcomes: Counter[str] = Counter()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queues: list[queue.SimpleQueue[Callable[[], None] | None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._waiting: list[tuple[Request, Deferred]] = []  # writes before the first lease
        self._ready = False  # the first listing is in the mirror and a lease is held
        self._watching = False
        self._down_since: float | None = time.monotonic()  # the watch is not (yet) up
        self._lease_lost = False
        self._in_flight = 0  # items handed to the writers, not answered yet
        # One key's writes keep their order: a key's single writes always run on the
        # same writer (hashed), and while a bulk transaction holds a key, later writes
        # to it wait here (key -> jobs) until the bulk's answer is in.
        self._in_bulk: dict[str, list[Callable[[], None]]] = {}
        self._singles: Counter[str] = Counter()  # keys with single writes on a writer
        self._next_writer = 0  # bulk transactions take the writers in turn
        self._bulk_writes = 0  # bulk transactions handed to the writers (first tries)
        self._next_probe = 0.0
        self._writable = True  # the split-brain detector's verdict on this side
        # Nodes down whose lease revocation is queued. Replaced, never mutated: the
        # writer threads read it.
        self._down: frozenset[NodeId] = frozenset()
        # For the reasons of name events: nodes seen down, owners seen dead (bounded).
        self._gone_nodes: set[NodeId] = set()
        self._dead_owners: set[Any] = set()
        self._live: frozenset[str] = frozenset()  # node names in the latest view
        self._probe_cursor = 0

    # ---- life --------------------------------------------------------------------------

    def start(self, restarted: bool) -> None:
        # Until the first listing, the mirror shows nothing of etcd (not a past life's).
        self.host.mirror.replace([], [])
        self._spawn("etcd-session", self._session_loop)
        self._spawn("etcd-keepalive", self._keepalive_loop)
        for index in range(self.settings.write_threads):
            jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
            self._queues.append(jobs)
            self._spawn(f"etcd-writer-{index}", functools.partial(self._work, jobs))

    def stop(self) -> None:
        self._stop.set()
        for jobs in self._queues:
            jobs.put(None)
        self.store.close_watch()
        if self.lease:
            # A node that stops frees its names now, as the built-in backend's purge does.
            try:
                self.store.revoke(self.lease)
            except StoreError as exc:
                logger.warning("etcd: could not revoke this node's lease at stop: {}", exc)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # ---- client requests -----------------------------------------------------------------

    def write(self, request: Request, reply: Deferred) -> None:
        if not self._ready:
            self._waiting.append((request, reply))
            return
        items = write_items(request)
        if items is None:
            reply.fail(ErrorCode.UNKNOWN_REQUEST, type(request).__name__)
            return
        pending = Gathered(reply, request, [None] * len(items))
        bulk: list[tuple[int, Register, str]] = []  # a batch's names: few transactions
        try:
            self._split(items, request, pending, bulk)
        except Exception:
            # The host answers the client backend_failure; the names this batch held
            # must not stay held (a later write to one would wait for ever).
            for _, _, key in bulk:
                for job in self._in_bulk.pop(key, []):
                    self._submit(key, job)
            raise
        for chunk in _chunks(bulk, self.settings.txn_ops, TXN_BYTES):
            pending.waiting += len(chunk)
            self._in_flight += len(chunk)
            self._next_writer = (self._next_writer + 1) % len(self._queues)
            self._bulk_writes += 1
            self._queues[self._next_writer].put(functools.partial(self._bulk, pending, chunk))
        if pending.waiting == 0:
            reply.resolve(pending.reply())

    def _split(
        self,
        items: list[Any],
        request: Request,
        pending: Gathered,
        bulk: list[tuple[int, Register, str]],
    ) -> None:
        """Hand each item of a request to a writer, or keep a batch's claims in ``bulk``
        (their names are held: a later write to one waits for the bulk's answer)."""
        for index, item in enumerate(items):
            checked = revalidate(item)  # one bad item of a batch fails alone
            if (
                len(items) > 1
                and isinstance(checked, Register)
                and (key := name_key(self.settings.prefix, checked.kind, checked.name))
                not in self._in_bulk
                and not self._singles[key]
            ):
                self._in_bulk[key] = []  # a later item on the key waits for this one
                bulk.append((index, checked, key))
                continue
            job = self._job(checked, pending, index) if isinstance(checked, Request) else None
            if job is None:
                pending.results[index] = (
                    checked
                    if isinstance(checked, RegistryError)
                    else _error(request, ErrorCode.INVALID_REQUEST, "not a request of this batch")
                )
                continue
            pending.waiting += 1
            self._in_flight += 1
            self._submit(*job)

    def _submit(self, key: str, job: Callable[[], None]) -> None:
        """Run one key's single write after every earlier write to that key."""
        if key in self._in_bulk:
            self._in_bulk[key].append(job)
            return
        self._singles[key] += 1
        self._queues[hash(key) % len(self._queues)].put(job)

    def status(self, request_id: str) -> GlobalStatus:
        down = self._down_since
        return GlobalStatus(
            request_id=request_id,
            node=self.me.name,
            sequencer="etcd",
            epoch=self.lease,
            seq=self.view.revision,
            sequencing=False,
            names=len(self.view.entries()),
            groups=len({m.group for m in self.view.members()}),
            pending=self._in_flight,
            outcomes=dict(self.outcomes),
            backend={
                "store": "etcd",
                "endpoints": list(self.settings.endpoints),
                "lease": self.lease,
                "revision": self.view.revision,
                "watching": self._watching,
                "bulk_writes": self._bulk_writes,
                # How stale the node table may be: the watch is down since then.
                "stale_for_s": None if down is None else round(time.monotonic() - down, 3),
            },
        )

    # ---- hooks ---------------------------------------------------------------------------

    def owner_died(self, address: Any, reason: str) -> None:
        if len(self._dead_owners) >= _MAX_REMEMBERED:
            self._dead_owners.clear()
        self._dead_owners.add(address_key(address))
        mine = (self.me.name, self.me.incarnation)
        keys = []
        for record in self.view.owned_by_address(address):
            owner = record.entry or record.member
            if owner is not None and (owner.node, owner.incarnation) == mine:
                keys.append((record.key, record.revision))  # (another node's: it watches)
        if keys:
            self._queues[hash(keys[0][0]) % len(self._queues)].put(
                functools.partial(self._purge, keys)
            )

    def node_down(self, node: NodeId, reason: str) -> None:
        if len(self._gone_nodes) >= _MAX_REMEMBERED:
            self._gone_nodes.clear()
        self._gone_nodes.add(node)
        known = self.view.node_lease(node.name)
        if known is None or known[0] != node.incarnation:
            return  # not that incarnation's lease (a restarted node has a new one)
        if not self._writable or not self._quorum():
            # This side lost (or is about to lose) the split-brain verdict: the node may
            # well be alive on the winning side. Its lease still ends its names if it
            # really died.
            logger.info("etcd: {} is down, but this side may not revoke its lease", node.name)
            return
        self._down = self._down | {node}
        self._queues[0].put(functools.partial(self._revoke, node, known[1]))

    def _quorum(self) -> bool:
        """Does this node's latest view hold a majority of ``cluster_nodes``? The view
        that reports a node down arrives before the split-brain detector's verdict on
        it, so the cut-off side must not wait for that verdict to know it lost. (Without
        ``cluster_nodes`` every side counts as a majority: docs/backends.md.)"""
        expected = set(self.host.settings.cluster_nodes)
        return not expected or 2 * len(self._live & expected) > len(expected)

    def view_changed(self, view: ClusterView) -> None:
        back = {NodeId(r.name, r.incarnation) for r in view.records}
        self._live = frozenset(n.name for n in back)  # replaced, never mutated: see _down
        if self._down & back:
            self._down = self._down - back  # back before its revocation ran: keep it

    def tick(self, now: float) -> None:
        if now >= self._next_probe:
            self._next_probe = now + self.host.settings.liveness_probe_interval
            self._probe_owners()

    def _probe_owners(self) -> None:
        """Probe the ports of the actors this node owns names for: a refused one is dead
        (the Registry watches only the local scope's owners)."""
        mine = (self.me.name, self.me.incarnation)
        owners: dict[Any, Any] = {}
        for record in self.view.records.values():
            owner = record.entry or record.member
            if owner is not None and (owner.node, owner.incarnation) == mine:
                owners.setdefault(address_key(owner.address), owner.address)
        watched = list(owners.values())
        if not watched:
            return
        batch = self.host.settings.liveness_probe_batch
        start = self._probe_cursor % len(watched)
        chosen = (watched[start:] + watched[:start])[:batch]
        self._probe_cursor = start + len(chosen)
        for dead in self.host.probe_dead(chosen):
            self.owner_died(dead, "liveness probe")

    def writability_changed(self, writable: bool, reason: str) -> None:
        # etcd's quorum decides who may write; the verdict only decides who may revoke
        # the leases of nodes it cannot see (see node_down).
        self._writable = writable

    def healed(self, nodes: frozenset[str], resolver: Resolver) -> None:
        pass  # nothing to merge: both sides only ever wrote through etcd's quorum

    def woken(self) -> None:
        while True:
            try:
                news = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(news, _Answered):
                self._on_answer(news)
            elif isinstance(news, _Watched):
                self._apply(self.view.apply(news.changes, watched_to=news.revision), True)
            elif isinstance(news, _Listed):
                self._apply(self.view.replace(news.changes, news.revision), True)
                self.host.caught_up()  # the mirror holds the prefix: events may start
                self._session_ready()
            elif isinstance(news, _Session):
                self._on_session(news)

    # ---- the actor's side of the threads' news ---------------------------------------------

    def _on_answer(self, answer: _Answered) -> None:
        if answer.changes:
            self._apply(self.view.apply(answer.changes), False)
        if answer.bulk:
            for job in self._in_bulk.pop(answer.key, []):
                self._submit(answer.key, job)
        else:
            self._singles[answer.key] -= 1
            if self._singles[answer.key] <= 0:
                del self._singles[answer.key]
        pending = answer.request
        self._in_flight -= 1
        pending.results[answer.index] = answer.reply
        item = type(answer.reply).__name__
        self.outcomes[item] += 1
        pending.waiting -= 1
        if pending.waiting == 0:
            pending.reply_to.resolve(pending.reply())

    def _apply(self, applied: Any, from_watch: bool) -> None:
        if applied.update:
            try:
                self.host.mirror.write_update(self._with_reasons(applied, from_watch))
            except Exception:
                logger.exception("etcd backend could not update the mirror; rewriting it")
                self.host.mirror.replace(self.view.entries(), self.view.members())
        if from_watch:
            # A loss this node did not ask for (its own releases were applied from their
            # answers first): tell each owner it hosts, once, with the reason.
            cause = "lease_expired" if self._lease_lost else "deleted_in_etcd"
            for entry in applied.removed_entries:
                if (entry.node, entry.incarnation) == (self.me.name, self.me.incarnation):
                    self.host.send(
                        entry.address, NameLost(name=entry.name, kind=entry.kind, reason=cause)
                    )

    def _with_reasons(self, applied: Any, from_watch: bool) -> MirrorUpdate:
        """``applied.update`` saying why each removal happened, as far as this node
        can tell: the owner's node went down, the owner died, or (for this node's own
        names, deleted without its asking) lost."""
        update: MirrorUpdate = applied.update
        reasons: dict[Any, str] = dict(update.reasons)  # the view's: keys on an ended lease
        mine = (self.me.name, self.me.incarnation)
        removed: list[tuple[Any, Entry | Member]] = [(e.key, e) for e in applied.removed_entries]
        removed += [((m.group, address_key(m.address)), m) for m in applied.removed_members]
        for key, owner in removed:
            if key in reasons:
                continue
            if NodeId(owner.node, owner.incarnation) in self._gone_nodes:
                reasons[key] = why.NODE_DOWN
            elif address_key(owner.address) in self._dead_owners:
                reasons[key] = why.OWNER_DIED
            elif from_watch and (owner.node, owner.incarnation) == mine:
                reasons[key] = why.LOST
        return dataclasses.replace(update, reasons=reasons) if reasons else update

    def _on_session(self, news: _Session) -> None:
        if news.lease is not None:
            if news.lease == 0:
                # No lease, no writes: a key put without one would outlive this node.
                # They wait (or answer at the host's deadline) until the next lease.
                self._ready = False
            if news.lease == 0 and self.lease:
                logger.warning("etcd: this node's lease {} is gone ({})", self.lease, news.why)
                self._lease_lost = True
            elif news.lease:
                self._lease_lost = False
            self.lease = news.lease
            self._session_ready()
        if news.watching is not None:
            self._watching = news.watching
            if news.watching:
                self._down_since = None
            elif self._down_since is None:
                self._down_since = time.monotonic()
                logger.warning("etcd: the watch is down ({}); reads may be stale", news.why)
            if not news.watching and not self._ready:
                self._fail_waiting(news.why)

    def _session_ready(self) -> None:
        """Take writes once a lease is held and the first listing is in the mirror."""
        if self._ready or not self.lease or not self.view.revision:
            return
        self._ready = True
        waiting, self._waiting = self._waiting, []
        for request, deferred in waiting:
            if not deferred.done:
                self.write(request, deferred)

    def _fail_waiting(self, why: str) -> None:
        waiting, self._waiting = self._waiting, []
        for _, deferred in waiting:
            deferred.fail(ErrorCode.UNAVAILABLE, f"etcd is not reachable: {why}")

    # ---- jobs (run on the writer threads) ----------------------------------------------------

    def _job(
        self, item: Request, pending: Gathered, index: int
    ) -> tuple[str, Callable[[], None]] | None:
        def run(work: Callable[[], tuple[Reply, list[Change]]], key: str) -> Callable[[], None]:
            def job() -> None:
                try:
                    reply, changes = self._attempt(work, item)
                except Exception:  # a bug: answer now, not at the client's deadline
                    logger.exception("etcd write failed")
                    reply, changes = _error(item, ErrorCode.BACKEND_FAILURE, "the write failed"), []
                self._hand(_Answered(pending, index, reply, changes, key))

            return job

        if isinstance(item, Register):
            key = name_key(self.settings.prefix, item.kind, item.name)
            return key, run(lambda: self._register(item, key), key)
        if isinstance(item, Unregister | UpdateMeta):
            key = name_key(self.settings.prefix, item.kind, item.name)
            return key, run(lambda: self._change_owned(item, key), key)
        if isinstance(item, JoinGroup | LeaveGroup):
            try:
                key = member_key(self.settings.prefix, item.group, item.address)
            except RecordError:
                return None
            return key, run(lambda: self._membership(item, key), key)
        return None

    def _attempt(
        self,
        work: Callable[[], tuple[Reply, list[Change]]],
        item: Request,
        deadline: float | None = None,
    ) -> tuple[Reply, list[Change]]:
        """``work()``'s answer, or ``item``'s error (see :meth:`_retrying`)."""
        done, retried = self._retrying(work, deadline)
        if isinstance(done, _Failed):
            return _error(item, *done), []
        reply, changes = done
        if retried and isinstance(item, Unregister) and _code(reply) == "not_registered":
            # The failed attempt may have been applied: the release happened.
            reply = Unregistered(request_id=item.request_id, name=item.name, kind=item.kind)
        return reply, changes

    def _retrying(
        self, work: Callable[[], _T], deadline: float | None = None
    ) -> tuple[_T | _Failed, bool]:
        """``work()``'s result and whether it was tried more than once. etcd is briefly
        unavailable while it elects a leader (the old one was cut off or restarted):
        try again until ``deadline`` (default: half the client's deadline from now), so
        a short election is no error and a lost quorum still answers in time."""
        if deadline is None:
            deadline = self._retry_deadline()
        retried = False
        while True:
            try:
                return work(), retried
            except StoreUnavailable as exc:
                if time.monotonic() + RETRY_PAUSE < deadline and not self._stop.is_set():
                    retried = True
                    self._stop.wait(RETRY_PAUSE)
                    continue
                return _Failed(ErrorCode.UNAVAILABLE, f"etcd: {exc}"), retried
            except RecordError as exc:  # e.g. meta that is not plain JSON
                return _Failed(ErrorCode.INVALID_REQUEST, str(exc)), retried
            except StoreError as exc:
                return _Failed(ErrorCode.BACKEND_FAILURE, f"etcd: {exc}"), retried

    def _retry_deadline(self) -> float:
        return time.monotonic() + self.host.settings.global_request_timeout / 2

    def _bulk(self, pending: Gathered, chunk: list[tuple[int, Register, str]]) -> None:
        """Answer every item of ``chunk`` (see :meth:`_decide_bulk`), whatever happens:
        until its answer is in, a later write to one of its names waits."""
        answers: dict[int, tuple[Reply, list[Change]]] = {}
        try:
            self._decide_bulk(chunk, answers)
        except Exception:  # a bug: the items still get an answer, their names are freed
            logger.exception("etcd bulk write failed")
        for index, item, key in chunk:
            reply, changes = answers.get(index) or (
                _error(item, ErrorCode.BACKEND_FAILURE, "the bulk write failed"),
                [],
            )
            self._hand(_Answered(pending, index, reply, changes, key, bulk=True))

    def _decide_bulk(
        self,
        chunk: list[tuple[int, Register, str]],
        answers: dict[int, tuple[Reply, list[Change]]],
    ) -> None:
        """New names of a batch in one transaction, created together where none exists.
        Where some do, those are decided one by one and the rest tried together again,
        so a bulk load of new names costs one round trip per ``txn_ops`` names."""
        deadline = self._retry_deadline()  # for the whole chunk, however many calls
        values: dict[str, bytes] = {}
        todo = []
        for index, item, key in chunk:
            try:
                values[key] = entry_value(self._entry(item))
            except RecordError as exc:  # e.g. meta that is not plain JSON: this item only
                answers[index] = (_error(item, ErrorCode.INVALID_REQUEST, str(exc)), [])
                continue
            todo.append((index, item, key))
        for _ in range(3):  # a key deleted meanwhile costs one more round, not a loop
            if not todo:
                return
            batch = {key: values[key] for _, _, key in todo}
            done, _ = self._retrying(functools.partial(self._create_all, batch), deadline)
            if isinstance(done, _Failed) and done.code == ErrorCode.BACKEND_FAILURE:
                # etcd refused the transaction itself (e.g. more operations than its
                # --max-txn-ops, or larger than --max-request-bytes): name by name.
                logger.warning(
                    "etcd refused a bulk transaction ({}); writing names one by one", done.detail
                )
                break
            if isinstance(done, _Failed):
                for index, item, _ in todo:
                    answers[index] = (_error(item, *done), [])
                return
            created, current, revision, lease = done
            if created:
                for index, item, key in todo:
                    change = Change(key, revision, values[key], lease)
                    answers[index] = (self._registered(item), [change])
                return
            for index, item, key in todo:
                found = current.get(key)
                if found is None:
                    continue
                if found.value == values[key] and found.lease == lease:
                    # This very write, applied by an attempt whose answer was lost.
                    change = Change(key, found.mod_revision, found.value, found.lease)
                    answers[index] = (self._registered(item), [change])
                    continue
                existing = functools.partial(self._existing, item, key, found, values[key])
                answers[index] = self._attempt(existing, item, deadline)
            todo = [t for t in todo if t[2] not in current]
        for index, item, key in todo:
            register = functools.partial(self._register, item, key)
            answers[index] = self._attempt(register, item, deadline)

    def _create_all(self, values: dict[str, bytes]) -> tuple[bool, dict[str, KeyValue], int, int]:
        lease = self._lease()
        created, current, revision = self.store.create_all(list(values.items()), lease)
        return created, current, revision, lease

    def _entry(self, item: Register) -> Entry:
        return Entry(
            item.name,
            item.kind,
            item.address,
            self.me.name,
            dict(item.meta),
            time.time(),
            self.me.incarnation,
        )

    def _register(self, item: Register, key: str) -> tuple[Reply, list[Change]]:
        value = entry_value(self._entry(item))
        lease = self._lease()
        created, current, revision = self.store.create(key, value, lease)
        if created:
            return self._registered(item), [Change(key, revision, value, lease)]
        assert current is not None
        return self._existing(item, key, current, value)

    def _existing(
        self, item: Register, key: str, current: KeyValue, value: bytes
    ) -> tuple[Reply, list[Change]]:
        """``item`` (stored as ``value``) found ``key`` taken by ``current``: the owner's
        again (its meta is replaced), or the loser's (the owner is named)."""
        owner = self.view.parse_entry(key, current)
        if owner is not None and _same(owner.address, item.address):
            # The owner registering again replaces its meta (as the local scope does).
            if (owner.node, owner.incarnation) != (self.me.name, self.me.incarnation):
                return _error(
                    item, ErrorCode.NOT_OWNER, f"{item.name!r} is homed on {owner.node}"
                ), []
            ok, revision = self.store.replace(key, value, current.mod_revision, current.lease)
            if ok:
                return self._registered(item), [Change(key, revision, value, current.lease)]
            return self._register(item, key)  # changed meanwhile: decide again
        if owner is None:
            return _error(item, ErrorCode.BACKEND_FAILURE, f"unreadable record at {key}"), []
        return (
            AlreadyRegistered(
                request_id=item.request_id,
                name=owner.name,
                kind=owner.kind,
                owner=owner.address,
                node=owner.node,
            ),
            [Change(key, current.mod_revision, current.value, current.lease)],
        )

    def _lease(self) -> int:
        """This node's lease for a new key; StoreUnavailable while it has none (lost, and
        the next not granted yet): the write is tried again, then answers unavailable."""
        lease = self.lease
        if not lease or self._lease_lost:
            raise StoreUnavailable("this node holds no etcd lease right now")
        return lease

    def _registered(self, item: Register) -> Registered:
        return Registered(
            request_id=item.request_id,
            name=item.name,
            kind=item.kind,
            address=item.address,
            node=self.me.name,
        )

    def _change_owned(self, item: Unregister | UpdateMeta, key: str) -> tuple[Reply, list[Change]]:
        current = self.store.get(key)
        owner = self.view.parse_entry(key, current) if current is not None else None
        if current is None or owner is None:
            return (
                _error(
                    item, ErrorCode.NOT_REGISTERED, f"no {item.kind} is registered as {item.name!r}"
                ),
                [],
            )
        if owner.node != self.me.name:
            return _error(
                item, ErrorCode.NOT_OWNER, f"{item.name!r} is owned by an actor on {owner.node}"
            ), []
        if isinstance(item, Unregister):
            ok, revision = self.store.delete_if(key, current.mod_revision)
            if not ok:
                return self._change_owned(item, key)
            reply: Reply = Unregistered(request_id=item.request_id, name=item.name, kind=item.kind)
            return reply, [Change(key, revision)]
        updated = Entry(
            owner.name,
            owner.kind,
            owner.address,
            owner.node,
            dict(item.meta),
            owner.registered_at,
            owner.incarnation,
        )
        value = entry_value(updated)
        ok, revision = self.store.replace(key, value, current.mod_revision, current.lease)
        if not ok:
            return self._change_owned(item, key)
        return (
            MetaUpdated(
                request_id=item.request_id, name=item.name, kind=item.kind, meta=dict(item.meta)
            ),
            [Change(key, revision, value, current.lease)],
        )

    def _membership(self, item: JoinGroup | LeaveGroup, key: str) -> tuple[Reply, list[Change]]:
        if isinstance(item, JoinGroup):
            member = Member(
                item.group, item.address, self.me.name, dict(item.meta), self.me.incarnation
            )
            value = member_value(member)
            lease = self._lease()
            revision = self.store.put(key, value, lease)
            return JoinedGroup(request_id=item.request_id, group=item.group), [
                Change(key, revision, value, lease)
            ]
        deleted, revision = self.store.delete(key)
        reply = LeftGroup(request_id=item.request_id, group=item.group, was_member=deleted)
        return reply, [Change(key, revision)] if deleted else []

    def _purge(self, keys: list[tuple[str, int]]) -> None:
        """Release a dead actor's names and memberships in one transaction (everyone
        sees them go at once); where one changed meanwhile, key by key."""
        try:
            ok, at = self.store.delete_all_if(keys)
            if ok:
                self._hand(_Watched([Change(key, at) for key, _ in keys], 0))
                return
            for key, revision in keys:
                ok, at = self.store.delete_if(key, revision)
                if ok:
                    self._hand(_Watched([Change(key, at)], 0))
        except StoreError as exc:
            # Its node's lease still ends them, at the latest when this node stops.
            logger.warning("etcd: could not release what a dead actor held: {}", exc)

    def _revoke(self, node: NodeId, lease: int) -> None:
        if node not in self._down or not self._quorum():
            return  # it came back (a partition healed), or this side lost, before the job ran
        try:
            self.store.revoke(lease)
            logger.info("etcd: revoked the lease of {} (node down)", node.name)
        except StoreError as exc:
            logger.warning("etcd: could not revoke the lease of {}: {}", node.name, exc)

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        while not self._stop.is_set():
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a job's own errors are answers; this is a bug
                logger.exception("etcd writer failed")

    def _hand(self, news: Any) -> None:
        self._inbox.put(news)
        self.host.wake()

    # ---- the session thread: lease, listing, watch ---------------------------------------------

    def _session_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.lease or self._lease_lost:
                    lease = self.store.grant(self.settings.lease_ttl)
                    self.store.put(
                        node_key(self.settings.prefix, self.me.name),
                        node_value(self.me.incarnation, lease),
                        lease,
                    )
                    self.lease = lease  # read by the writers; the actor hears it too
                    self._lease_lost = False
                    self._hand(_Session(lease=lease))
                changes, revision = self.store.listing(self.settings.prefix)
                self._hand(_Listed(changes, revision))
                self._hand(_Session(watching=True))
                self.store.watch(
                    self.settings.prefix,
                    revision + 1,
                    lambda changes, at: self._hand(_Watched(changes, at)),
                    self._stop,
                )
            except StoreError as exc:
                self._hand(_Session(watching=False, why=str(exc)))
                self._stop.wait(RETRY_AFTER)

    def _keepalive_loop(self) -> None:
        while not self._stop.wait(self.settings.lease_ttl / 3):
            lease = self.lease
            if not lease:
                continue
            try:
                remaining = self.store.keepalive(lease)
            except StoreError:
                continue  # etcd unreachable: the lease may still be alive; try again
            if remaining <= 0 and lease == self.lease:
                self._lease_lost = True
                self._hand(_Session(lease=0, why="etcd no longer knows it"))
                self.store.close_watch()  # the session loop grants a new one and re-lists


def _code(reply: Reply) -> str | None:
    code = getattr(reply, "code", None)
    return None if code is None else str(getattr(code, "value", code))


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)


__all__ = ["EtcdBackend", "EtcdConfig"]


def _chunks(
    bulk: list[tuple[int, Register, str]], most: int, budget: int
) -> list[list[tuple[int, Register, str]]]:
    """``bulk`` in transactions of at most ``most`` names and about ``budget`` bytes
    (each key is in a txn three times: compare, put and the failure branch's get)."""
    chunks: list[list[tuple[int, Register, str]]] = []
    chunk: list[tuple[int, Register, str]] = []
    size = 0
    for claim in bulk:
        meta = claim[1].meta
        cost = 3 * len(claim[2]) + 256 + (len(repr(meta)) if meta else 0)
        if chunk and (len(chunk) >= most or size + cost > budget):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(claim)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks

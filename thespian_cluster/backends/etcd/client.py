"""A thin etcd v3 client over the gRPC gateway's JSON API, with the standard library only.

etcd serves every gRPC method of its v3 API as JSON too, on the client URL
(``POST /v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/grant``, ``/v3/watch`` ...). This
module speaks that dialect with ``http.client`` and a raw socket for watches: no grpc
or protobuf dependency, and every field of every reply is ours to read
(``compact_revision``, ``canceled``, ``header.revision``).

The dialect, as etcd 3.5 speaks it (measured against the real binary):

* Keys and values are base64 strings; int64 fields (revisions, lease ids, TTLs) come
  back as JSON *strings* (``"revision": "7"``); fields at their zero value are
  *omitted* (a failed txn has no ``succeeded``, a PUT event has no ``type``, an
  expired lease's keepalive has no ``TTL``). :func:`_int` reads all of them.
* A failed unary call answers a non-200 status with
  ``{"error": "...", "code": <gRPC code>, "message": "etcdserver: ..."}``.
* Streams (watch, lease keepalive) answer 200 with chunked, newline-separated
  ``{"result": {...}}`` objects; a stream that fails mid-way sends
  ``{"error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader",
  "http_status": "Service Unavailable"}}``.
* A watch from a compacted revision is first ``created``, then
  ``{"canceled": true, "compact_revision": "N"}``; one the server refuses
  (permission denied) is ``created`` and ``canceled`` with a ``cancel_reason``.
* The request body of a stream cannot be kept open over HTTP/1.1 (the gateway reads
  nothing until it ends), so a watch stream carries one watch, created by its body,
  and ``progress_request`` cannot be sent later: :class:`Watch` checks an idle
  stream's member with a status call instead (see ``probe_interval``).
* Two request headers do work: ``Grpc-Timeout`` (``"700m"``) bounds the server's side
  of a call (it answers "context deadline exceeded" in time instead of holding the
  socket), and ``Grpc-Metadata-hasleader: true`` makes a member without a leader
  answer "etcdserver: no leader" (code 14) at once, where it would otherwise wait for
  its own request timeout (seven seconds) and answer "context deadline exceeded".
* ``Authorization`` carries the bare token of ``/v3/auth/authenticate`` (no
  ``Bearer``). Without a token, a cluster with auth on answers "user name is empty".

Errors are typed (:class:`EtcdError` and its subclasses); a call never blocks past its
client's ``timeout``: the deadline covers connecting, failing over, re-authenticating
and the server's side of the call.

Threads: one client may be shared by many threads; each thread keeps its own
persistent connection per endpoint (a put-if-absent txn is then one round trip on an
open socket). A :class:`Watch` belongs to the thread that reads it, and any thread may
close it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

Key = str | bytes
Value = str | bytes

# ---- errors ---------------------------------------------------------------------------

# gRPC status codes the gateway reports in "code" / "grpc_code".
_UNKNOWN, _INVALID_ARGUMENT, _DEADLINE_EXCEEDED, _NOT_FOUND = 2, 3, 4, 5
_PERMISSION_DENIED, _FAILED_PRECONDITION, _OUT_OF_RANGE = 7, 9, 11
_UNAVAILABLE, _UNAUTHENTICATED = 14, 16


class EtcdError(Exception):
    """etcd answered with an error, or could not be asked.

    ``code`` is the gRPC status code of etcd's reply (None when no reply came);
    ``message`` is etcd's own text (``"etcdserver: ..."``) or ours.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.message = message
        self.code = code


class EtcdUnavailable(EtcdError):
    """No member could serve the call in time: none answered, the answering member had
    no leader (no quorum), the request timed out, or a stream broke.

    ``maybe_applied`` is True when a *write* reached a member and no definite answer
    came back (a timeout after sending, "request timed out"): it may still be applied,
    so read before retrying it. It is False when the write certainly was not applied
    (no connection, "no leader") and for every read.
    """

    def __init__(self, message: str, code: int | None = None, *, maybe_applied: bool = False):
        super().__init__(message, code)
        self.maybe_applied = maybe_applied


class EtcdCompacted(EtcdError):
    """The revision asked for was compacted away. ``compact_revision`` is the oldest
    revision still kept when etcd said so (a watch tells it; a range does not: 0)."""

    def __init__(self, message: str, code: int | None = None, *, compact_revision: int = 0):
        super().__init__(message, code)
        self.compact_revision = compact_revision


class EtcdAuthError(EtcdError):
    """Authentication failed (bad user or password, token refused or missing while auth
    is on) or permission was denied."""


class EtcdLeaseNotFound(EtcdError):
    """The lease named does not exist (expired, revoked, or never granted)."""


class EtcdInvalidRequest(EtcdError):
    """etcd refused the request itself (a future revision, a bad range, too large)."""


class EtcdWatchCanceled(EtcdError):
    """The server canceled a watch for a reason other than compaction, lost leader or
    permission (which raise :class:`EtcdCompacted`, :class:`EtcdUnavailable` and
    :class:`EtcdAuthError`)."""


class EtcdProtocolError(EtcdError):
    """A reply this client cannot read (not JSON, not the gateway's shape)."""


# Replies that prove a write was refused before being proposed: safe to send elsewhere.
_REFUSED_BEFORE_PROPOSAL = ("no leader", "too many requests", "not capable")
_UNAVAILABLE_TEXT = (
    "no leader",
    "request timed out",
    "leader changed",
    "too many requests",
    "context deadline exceeded",
    "server stopped",
    "transport is closing",
    "error reading from server",
    "connection refused",
)
_AUTH_TEXT = (
    "authentication failed",
    "invalid auth token",
    "user name is empty",
    "permission denied",
    "auth token",
    "user name not found",
)


def error_from_reply(code: int | None, message: str, *, write: bool = False) -> EtcdError:
    """The typed error for an etcd error reply (a unary call's, a stream's, or a watch's
    ``cancel_reason``). ``write``: the request was a write (for ``maybe_applied``)."""
    text = message.lower()
    if "compacted" in text:
        return EtcdCompacted(message, code)
    if "lease not found" in text:
        return EtcdLeaseNotFound(message, code)
    if code in (_UNAUTHENTICATED, _PERMISSION_DENIED) or any(t in text for t in _AUTH_TEXT):
        return EtcdAuthError(message, code)
    if (
        code in (_UNAVAILABLE, _DEADLINE_EXCEEDED)
        or any(t in text for t in _UNAVAILABLE_TEXT)
        or text.endswith("timed out")
    ):
        refused = any(t in text for t in _REFUSED_BEFORE_PROPOSAL)
        return EtcdUnavailable(message, code, maybe_applied=write and not refused)
    if code in (_INVALID_ARGUMENT, _OUT_OF_RANGE, _FAILED_PRECONDITION):
        return EtcdInvalidRequest(message, code)
    return EtcdError(message, code)


def _is_invalid_token(error: EtcdError) -> bool:
    """A token etcd no longer knows (expired, or issued by a member that restarted):
    worth one fresh authentication."""
    text = error.message.lower()
    return "invalid auth token" in text or "user name is empty" in text


# ---- records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd keeps it. ``lease`` is 0 for a key without a lease; a deleted
    key's record (in a DELETE event) has only ``key`` and ``mod_revision``."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=_b64decode(data.get("key", "")),
            value=_b64decode(data.get("value", "")),
            create_revision=_int(data.get("create_revision")),
            mod_revision=_int(data.get("mod_revision")),
            version=_int(data.get("version")),
            lease=_int(data.get("lease")),
        )


class Got(NamedTuple):
    """:meth:`EtcdClient.get`: the record (None when the key does not exist) and the
    store's revision when it was read."""

    record: KeyValue | None
    revision: int


class Range(NamedTuple):
    """:meth:`EtcdClient.get_prefix` (and a txn's :class:`Get`): the records, in key
    order, and the store's revision when they were read."""

    records: list[KeyValue]
    revision: int


@dataclass(frozen=True, slots=True)
class Put:
    """A put, as a :meth:`EtcdClient.txn` operation."""

    key: Key
    value: Value
    lease: int = 0
    prev_kv: bool = False

    def to_json(self) -> dict[str, Any]:
        if not _bytes(self.key):
            raise ValueError("an etcd key cannot be empty")
        body: dict[str, Any] = {"key": _b64(self.key), "value": _b64(self.value)}
        if self.lease:
            body["lease"] = self.lease
        if self.prev_kv:
            body["prev_kv"] = True
        return {"request_put": body}


@dataclass(frozen=True, slots=True)
class Get:
    """A range read (one key, or every key under a prefix), as a txn operation."""

    key: Key
    prefix: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"request_range": _range_body(self.key, self.prefix)}


@dataclass(frozen=True, slots=True)
class Delete:
    """A delete (one key, or every key under a prefix), as a txn operation."""

    key: Key
    prefix: bool = False
    prev_kv: bool = False

    def to_json(self) -> dict[str, Any]:
        body = _range_body(self.key, self.prefix)
        if self.prev_kv:
            body["prev_kv"] = True
        return {"request_delete_range": body}


Op = Put | Get | Delete


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a txn: ``target`` of ``key`` compared by ``op`` with ``value``.

    ``target`` names what is compared: ``"create_revision"`` (0 for a key that does not
    exist), ``"mod_revision"``, ``"version"`` (0 likewise), ``"value"`` or ``"lease"``.
    The helpers below build the ones the registry needs.
    """

    key: Key
    target: Literal["create_revision", "mod_revision", "version", "value", "lease"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes | str

    def to_json(self) -> dict[str, Any]:
        target, field_name = _COMPARE_TARGETS[self.target]
        operand: Any
        if self.target == "value":
            if not isinstance(self.value, str | bytes):
                raise ValueError("a value compare needs str or bytes")
            operand = _b64(self.value)
        else:
            if not isinstance(self.value, int) or isinstance(self.value, bool):
                raise ValueError(f"a {self.target} compare needs an int")
            operand = self.value
        return {
            "key": _b64(self.key),
            "target": target,
            "result": _COMPARE_OPS[self.op],
            field_name: operand,
        }


_COMPARE_TARGETS = {
    "create_revision": ("CREATE", "create_revision"),
    "mod_revision": ("MOD", "mod_revision"),
    "version": ("VERSION", "version"),
    "value": ("VALUE", "value"),
    "lease": ("LEASE", "lease"),
}
_COMPARE_OPS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def key_missing(key: Key) -> Compare:
    """True while ``key`` does not exist (its create_revision is 0)."""
    return Compare(key, "create_revision", "==", 0)


def key_exists(key: Key) -> Compare:
    return Compare(key, "create_revision", ">", 0)


def mod_revision_is(key: Key, revision: int) -> Compare:
    """True while ``key`` is exactly the version written at ``revision``."""
    return Compare(key, "mod_revision", "==", revision)


def value_is(key: Key, value: Value) -> Compare:
    return Compare(key, "value", "==", value)


def lease_is(key: Key, lease_id: int) -> Compare:
    return Compare(key, "lease", "==", lease_id)


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class Deleted:
    """How many keys a delete removed, at which revision (and their last records when
    ``prev_kv`` was asked)."""

    count: int
    revision: int
    prev: list[KeyValue] = field(default_factory=list)


OpResult = Range | PutResult | Deleted


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the compares held (``succeeded``: the success ops ran, otherwise the
    failure ops), the store's revision after the txn, and one result per op run."""

    succeeded: bool
    revision: int
    responses: list[OpResult]


class CasResult(NamedTuple):
    """:meth:`EtcdClient.create`, :meth:`~EtcdClient.replace` and
    :meth:`~EtcdClient.delete_if`: whether the write happened; when it did not, the
    key's current record (None if the key does not exist); the store's revision."""

    succeeded: bool
    current: KeyValue | None
    revision: int


class Lease(NamedTuple):
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """:meth:`EtcdClient.time_to_live`: seconds left, the TTL granted, attached keys
    (when asked for)."""

    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class Status:
    """One member's ``/v3/maintenance/status``. ``leader`` is 0 while the member knows
    no leader (``errors`` then says so)."""

    endpoint: str
    member_id: int
    leader: int
    version: str
    revision: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    db_size: int
    is_learner: bool
    errors: list[str]


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch response: its events (one revision's or several, in revision order)
    and the header's revision. ``progress`` marks a progress notification: no events,
    and nothing up to ``revision`` was missed."""

    events: list[WatchEvent]
    revision: int
    progress: bool = False


# ---- endpoints and connections --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Endpoint:
    url: str
    host: str
    port: int
    tls: bool


def _parse_endpoint(url: str, tls: bool) -> _Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"etcd endpoint {url!r} is not http(s)://HOST[:PORT]")
    try:
        port = parts.port or 2379
    except ValueError as error:
        raise ValueError(f"etcd endpoint {url!r}: {error}") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"etcd endpoint {url!r} has a path; give scheme, host and port only")
    return _Endpoint(url, parts.hostname, port, tls or parts.scheme == "https")


class _NotSent(Exception):
    """The request never reached the member (no connection): safe to send elsewhere."""


class _NoReply(Exception):
    """The request went out and no (whole) reply came back."""


def _open_socket(
    endpoint: _Endpoint, context: ssl.SSLContext | None, timeout: float
) -> socket.socket:
    """A connected socket (TLS when the endpoint says so) within ``timeout``;
    :class:`_NotSent` if the member cannot be reached, :class:`EtcdError` if its
    certificate is refused (no other member would do better: a configuration error)."""
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as error:
        raise _NotSent(_describe(error)) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not endpoint.tls:
        return sock
    assert context is not None
    try:
        return context.wrap_socket(sock, server_hostname=endpoint.host)
    except ssl.SSLCertVerificationError as error:
        sock.close()
        raise EtcdError(f"TLS to {endpoint.url} failed: {error}") from None
    except OSError as error:
        sock.close()
        raise _NotSent(_describe(error)) from None


class _Connection:
    """One kept-alive HTTP/1.1 connection to a member.

    Each request leaves in one write: ``http.client.HTTPConnection`` writes the head and
    the body separately, and on loopback each write costs a wake-up of the server
    (measured on loopback: a put-if-absent txn took 0.93 ms that way, 0.72 ms this
    way, medians of 1000). ``http.client.HTTPResponse``
    still reads the reply (chunked or not).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._host = _host_header(*sock.getpeername()[:2])

    def post(
        self, path: str, payload: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes, bool]:
        """(status, body, whether the server will close the connection)."""
        self.sock.settimeout(timeout)
        head = [f"POST {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(payload)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        response = http.client.HTTPResponse(self.sock, method="POST")
        try:
            response.begin()
            data = response.read()
        finally:
            response.close()
        return response.status, data, bool(response.will_close)

    def peer_closed(self) -> bool:
        """Whether the member has closed this idle connection: between requests it
        sends nothing, so anything readable is its FIN (or a reset)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# The read budget of an attempt, less this share, is the server's own deadline
# (Grpc-Timeout): the member answers "deadline exceeded" before our socket gives up,
# and the connection survives.
_SERVER_DEADLINE_SHARE = 0.9


class EtcdClient:
    """A client of one etcd cluster through its members' JSON gateways.

    ``endpoints``: client URLs (``"http://127.0.0.1:2379"``), tried in turn: a call goes
    to the member that answered last and fails over to the next on a connection error,
    a timeout, or a member without leader. ``timeout`` (seconds) bounds each call from
    start to finish, failover included; :class:`EtcdUnavailable` when it runs out.

    ``username``/``password``: authenticate once (``/v3/auth/authenticate``) and send
    the token; a token etcd refuses later is renewed once per call. ``ca_file`` (and
    ``cert_file``/``key_file`` for a client certificate): TLS to every endpoint, whatever
    its scheme; an ``https`` URL uses TLS with the system's CAs.

    A write is sent to a second member only when the first certainly did not apply it
    (no connection, "no leader"); otherwise it fails with ``maybe_applied``
    (:class:`EtcdUnavailable`). Reads fail over on any trouble.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            raise ValueError("endpoints is a list of URLs, not one string")
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        if not (isinstance(timeout, int | float) and 0 < timeout < float("inf")):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if key_file is not None and cert_file is None:
            raise ValueError("key_file needs cert_file")
        tls = ca_file is not None or cert_file is not None
        self._endpoints = [_parse_endpoint(url, tls) for url in endpoints]
        self.timeout = float(timeout)
        self._username = username
        self._password = password
        self._ssl: ssl.SSLContext | None = None
        if any(e.tls for e in self._endpoints):
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                self._ssl.load_cert_chain(cert_file, key_file)
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._preferred = 0  # index of the endpoint that answered last
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._closed = False

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def close(self) -> None:
        """Close every pooled connection (of every thread). Open watches stay open."""
        self._closed = True
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- KV ----------------------------------------------------------------------------

    def get(self, key: Key, *, revision: int = 0) -> Got:
        """The record of ``key`` (None if it does not exist), at ``revision`` if given."""
        body = _range_body(key, prefix=False)
        if revision:
            body["revision"] = revision
        reply = self.request("/v3/kv/range", body)
        records = [KeyValue.from_json(kv) for kv in reply.get("kvs", [])]
        return Got(records[0] if records else None, _header_revision(reply))

    def get_prefix(self, prefix: Key, *, revision: int = 0) -> Range:
        """Every key that starts with ``prefix`` (every key for ``b""``), in key order."""
        body = _range_body(prefix, prefix=True)
        if revision:
            body["revision"] = revision
        reply = self.request("/v3/kv/range", body)
        return Range(
            [KeyValue.from_json(kv) for kv in reply.get("kvs", [])], _header_revision(reply)
        )

    def put(self, key: Key, value: Value, *, lease: int = 0) -> int:
        """Write ``key``; the store's revision after the write. ``lease``: the key is
        deleted when that lease ends (:class:`EtcdLeaseNotFound` if it already has)."""
        body = Put(key, value, lease).to_json()["request_put"]
        return _header_revision(self.request("/v3/kv/put", body, write=True))

    def delete(self, key: Key) -> Deleted:
        reply = self.request("/v3/kv/deleterange", _range_body(key, prefix=False), write=True)
        return Deleted(_int(reply.get("deleted")), _header_revision(reply))

    def delete_prefix(self, prefix: Key) -> Deleted:
        reply = self.request("/v3/kv/deleterange", _range_body(prefix, prefix=True), write=True)
        return Deleted(_int(reply.get("deleted")), _header_revision(reply))

    def compact(self, revision: int, *, physical: bool = True) -> int:
        """Forget history before ``revision`` (watches from older revisions then fail
        with :class:`EtcdCompacted`); ``physical``: return once it is done on disk."""
        body = {"revision": revision, "physical": physical}
        return _header_revision(self.request("/v3/kv/compaction", body, write=True))

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """If every compare holds, run ``success``, else ``failure``; atomically."""
        body = {
            "compare": [c.to_json() for c in compare],
            "success": [op.to_json() for op in success],
            "failure": [op.to_json() for op in failure],
        }
        writes = any(not isinstance(op, Get) for op in [*success, *failure])
        reply = self.request("/v3/kv/txn", body, write=writes)
        revision = _header_revision(reply)
        return TxnResult(
            succeeded=bool(reply.get("succeeded", False)),
            revision=revision,
            responses=[_op_result(r, revision) for r in reply.get("responses", [])],
        )

    def create(self, key: Key, value: Value, *, lease: int = 0) -> CasResult:
        """Put ``key`` only if it does not exist. When it does, nothing is written and
        ``current`` is the record that is there (the real owner)."""
        return self._conditional(key_missing(key), Put(key, value, lease), key)

    def replace(self, key: Key, value: Value, mod_revision: int, *, lease: int = 0) -> CasResult:
        """Put ``key`` only if it is still the version written at ``mod_revision``
        (compare-and-swap); otherwise ``current`` is what is there now."""
        return self._conditional(mod_revision_is(key, mod_revision), Put(key, value, lease), key)

    def delete_if(self, key: Key, mod_revision: int) -> CasResult:
        """Delete ``key`` only if it is still the version written at ``mod_revision``."""
        return self._conditional(mod_revision_is(key, mod_revision), Delete(key), key)

    def _conditional(self, condition: Compare, op: Op, key: Key) -> CasResult:
        result = self.txn([condition], [op], [Get(key)])
        if result.succeeded:
            return CasResult(True, None, result.revision)
        found = result.responses[0] if result.responses else None
        current = found.records[0] if isinstance(found, Range) and found.records else None
        return CasResult(False, current, result.revision)

    # ---- leases ------------------------------------------------------------------------

    def grant(self, ttl: int, *, lease_id: int = 0) -> Lease:
        """A new lease of ``ttl`` seconds (etcd may raise a short TTL to its minimum)."""
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise ValueError(f"a lease TTL is a positive whole number of seconds, not {ttl!r}")
        body: dict[str, Any] = {"TTL": ttl}
        if lease_id:
            body["ID"] = lease_id
        reply = self.request("/v3/lease/grant", body, write=True)
        return Lease(_int(reply.get("ID")), _int(reply.get("TTL")))

    def revoke(self, lease_id: int) -> bool:
        """End a lease now, deleting its keys. False when etcd knows no such lease
        (expired, revoked already): the caller's goal is met either way."""
        try:
            self.request("/v3/lease/revoke", {"ID": lease_id}, write=True)
        except EtcdLeaseNotFound:
            return False
        return True

    def keepalive_once(self, lease_id: int) -> int:
        """Renew a lease; the seconds it now has left, 0 if it has expired or is unknown."""
        # A one-message stream: the body's end closes our side, the server answers once.
        reply = self.request("/v3/lease/keepalive", {"ID": lease_id}, stream=True)
        return max(0, _int(reply.get("TTL")))

    def time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo | None:
        """A lease's seconds left and granted TTL (and its keys); None when unknown."""
        reply = self.request("/v3/lease/timetolive", {"ID": lease_id, "keys": keys})
        ttl = _int(reply.get("TTL"))
        if ttl < 0:
            return None
        return LeaseInfo(
            id=_int(reply.get("ID")),
            ttl=ttl,
            granted_ttl=_int(reply.get("grantedTTL")),
            keys=[_b64decode(k) for k in reply.get("keys", [])],
        )

    def leases(self) -> list[int]:
        reply = self.request("/v3/lease/leases", {})
        return [_int(item.get("ID")) for item in reply.get("leases", [])]

    # ---- watch -------------------------------------------------------------------------

    def watch(
        self,
        key: Key,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
        probe_interval: float | None = None,
    ) -> Watch:
        """Open a :class:`Watch` of ``key`` (or every key under it, with ``prefix``) from
        ``start_revision`` (0: from now on). Returns once etcd has created it."""
        return Watch(
            self,
            key,
            prefix=prefix,
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            probe_interval=probe_interval,
        )

    # ---- cluster -----------------------------------------------------------------------

    def status(self, endpoint: str | None = None) -> Status:
        """One member's status: the member that answers first, or the one at
        ``endpoint`` (one of this client's). A member without a leader still answers
        (``leader == 0``): a health probe checks that."""
        order = None
        if endpoint is not None:
            order = [i for i, e in enumerate(self._endpoints) if e.url == endpoint]
            if not order:
                raise ValueError(f"{endpoint!r} is not one of this client's endpoints")
        answered: list[str] = []
        reply = self.request(
            "/v3/maintenance/status", {}, require_leader=False, order=order, answered=answered
        )
        header = reply.get("header", {})
        return Status(
            endpoint=answered[0] if answered else "",
            member_id=_int(header.get("member_id")),
            leader=_int(reply.get("leader")),
            version=str(reply.get("version", "")),
            revision=_int(header.get("revision")),
            raft_term=_int(reply.get("raftTerm")),
            raft_index=_int(reply.get("raftIndex")),
            raft_applied_index=_int(reply.get("raftAppliedIndex")),
            db_size=_int(reply.get("dbSize")),
            is_learner=bool(reply.get("isLearner", False)),
            errors=[str(e) for e in reply.get("errors", [])],
        )

    def member_list(self) -> list[Member]:
        reply = self.request("/v3/cluster/member/list", {})
        return [
            Member(
                id=_int(m.get("ID")),
                name=str(m.get("name", "")),
                peer_urls=list(m.get("peerURLs", [])),
                client_urls=list(m.get("clientURLs", [])),
                is_learner=bool(m.get("isLearner", False)),
            )
            for m in reply.get("members", [])
        ]

    # ---- the transport -----------------------------------------------------------------

    def request(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        write: bool = False,
        stream: bool = False,
        require_leader: bool = True,
        order: Sequence[int] | None = None,
        answered: list[str] | None = None,
    ) -> dict[str, Any]:
        """One gateway call (``path`` like ``"/v3/auth/user/add"``, ``body`` its JSON):
        the reply's JSON object, or a typed :class:`EtcdError`.

        The methods above are built on it; it is public for the rest of the API (user
        and role administration, say). ``write``: the call changes state (see the class
        docstring for what that changes about failover); ``stream``: a streaming
        method, of which the first message is returned; ``require_leader``: a member
        without a leader refuses the call at once (off for status probes).
        """
        deadline = time.monotonic() + self.timeout
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            token = self._current_token(deadline)
            try:
                return self._call(
                    path, payload, token, deadline, write, stream, require_leader, order, answered
                )
            except EtcdAuthError as error:
                if attempt == 1 and self._username is not None and _is_invalid_token(error):
                    self._forget_token(token)
                    continue
                raise
        raise AssertionError("unreachable")

    def _call(
        self,
        path: str,
        payload: bytes,
        token: str | None,
        deadline: float,
        write: bool,
        stream: bool,
        require_leader: bool,
        order: Sequence[int] | None,
        answered: list[str] | None,
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = token
        if require_leader:
            headers["Grpc-Metadata-hasleader"] = "true"
        indices = list(order) if order is not None else self._failover_order()
        failures: list[str] = []
        for position, index in enumerate(indices):
            endpoint = self._endpoints[index]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Each endpoint still to try gets a fair share of the time left to connect,
            # so one that drops packets cannot starve the others; a read also gets only
            # its share, since a read can be sent again elsewhere; a write gets the rest
            # once sent, since it may not be.
            share = remaining / (len(indices) - position)
            read_budget = remaining if write else share
            headers["Grpc-Timeout"] = f"{max(1, int(read_budget * 1000 * _SERVER_DEADLINE_SHARE))}m"
            try:
                status, data = self._exchange(index, path, payload, headers, share, read_budget)
            except _NotSent as error:
                failures.append(f"{endpoint.url}: {error}")
                continue
            except _NoReply as error:
                if write:
                    raise EtcdUnavailable(
                        f"{endpoint.url} did not answer {path} in time: {error}",
                        maybe_applied=True,
                    ) from None
                failures.append(f"{endpoint.url}: {error}")
                continue
            try:
                reply = _parse_reply(status, data, stream, write)
            except EtcdUnavailable as error:
                if write and error.maybe_applied:
                    raise
                failures.append(f"{endpoint.url}: {error}")
                continue
            self._preferred = index
            if answered is not None:
                answered.append(endpoint.url)
            return reply
        raise EtcdUnavailable(
            f"no etcd endpoint answered {path} within {self.timeout:g}s: "
            + ("; ".join(failures) if failures else "no time left")
        )

    def _failover_order(self) -> list[int]:
        first = self._preferred
        count = len(self._endpoints)
        return [(first + k) % count for k in range(count)]

    def _exchange(
        self,
        index: int,
        path: str,
        payload: bytes,
        headers: dict[str, str],
        connect_budget: float,
        read_budget: float,
    ) -> tuple[int, bytes]:
        """POST on this thread's connection to endpoint ``index``: (status, body)."""
        for first_try in (True, False):
            try:
                connection, reused = self._connection(index, connect_budget)
            except _NotSent as error:
                if first_try:
                    raise
                # The member dropped the connection under our request and is now gone:
                # it may have applied the request before dying.
                raise _NoReply(f"reconnecting failed: {error}") from None
            try:
                status, data, will_close = connection.post(path, payload, headers, read_budget)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop_connection(index)
                if reused and first_try:
                    # The member closed a kept-alive connection while it sat idle (a
                    # restart, say): the request never reached it. Once more, fresh.
                    continue
                raise _NoReply(_describe(e)) from None
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection(index)
                raise _NoReply(_describe(e)) from None
            if will_close:
                self._drop_connection(index)
            return status, data
        raise AssertionError("unreachable")

    def _connection(self, index: int, connect_budget: float) -> tuple[_Connection, bool]:
        """This thread's open connection to endpoint ``index`` (and whether it was
        reused), connecting within ``connect_budget`` if there is none."""
        if self._closed:
            raise EtcdError("this EtcdClient is closed")
        pool: dict[int, _Connection] = self._local.__dict__.setdefault("pool", {})
        connection = pool.get(index)
        if connection is not None:
            if connection.peer_closed():
                # The member closed it while it sat idle (a restart): certainly unsent.
                self._drop_connection(index)
            else:
                return connection, True
        connection = _Connection(_open_socket(self._endpoints[index], self._ssl, connect_budget))
        pool[index] = connection
        with self._connections_lock:
            self._connections.add(connection)
        return connection, False

    def _drop_connection(self, index: int) -> None:
        pool: dict[int, _Connection] = self._local.__dict__.get("pool", {})
        connection = pool.pop(index, None)
        if connection is not None:
            connection.close()

    # ---- authentication ----------------------------------------------------------------

    def _current_token(self, deadline: float) -> str | None:
        if self._username is None:
            return None
        with self._auth_lock:
            if self._token is None:
                self._token = self._authenticate(deadline)
            return self._token

    def _forget_token(self, token: str | None) -> None:
        with self._auth_lock:
            if self._token == token:  # another thread may have renewed it already
                self._token = None

    def _authenticate(self, deadline: float) -> str:
        body = json.dumps({"name": self._username, "password": self._password}).encode()
        reply = self._call(
            "/v3/auth/authenticate", body, None, deadline, False, False, True, None, None
        )
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdAuthError("etcd authenticated without a token (is auth enabled?)")
        return token


# ---- watch ------------------------------------------------------------------------------


class Watch:
    """A watch of one key or prefix: batches of events in revision order.

    ::

        with client.watch(b"names/", prefix=True, start_revision=rev + 1) as watch:
            for batch in watch:              # blocks; ends when closed
                for event in batch.events: ...

    ``next(timeout)`` waits at most ``timeout`` seconds and returns None if nothing came.
    :attr:`resume_revision` is the first revision not yet delivered: a new watch from
    it misses nothing and repeats nothing.

    Failures end the watch with a typed error: :class:`EtcdCompacted` (its
    ``compact_revision``: the oldest revision still there) when ``start_revision`` has
    been compacted; :class:`EtcdUnavailable` when the stream breaks (the member stopped,
    lost its leader, or stopped answering). etcd sends nothing on an idle stream
    (unless ``progress_notify``, and then every ten minutes by default), so a silent
    member is noticed by probing it: after ``probe_interval`` seconds (default: the
    client's timeout) of silence, a status call to the same member, which must answer,
    with a leader, within the client's timeout.

    :meth:`close` may be called from any thread; a blocked ``next`` then returns None
    (and iteration ends) at once.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: Key,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
        probe_interval: float | None = None,
    ) -> None:
        if start_revision < 0:
            raise ValueError("start_revision is 0 (from now on) or a revision")
        self._client = client
        self.probe_interval = client.timeout if probe_interval is None else probe_interval
        if not self.probe_interval > 0:
            raise ValueError("probe_interval must be positive")
        create: dict[str, Any] = _range_body(key, prefix)
        if start_revision:
            create["start_revision"] = start_revision
        if prev_kv:
            create["prev_kv"] = True
        if progress_notify:
            create["progress_notify"] = True
        self._payload = json.dumps({"create_request": create}).encode()
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False
        self._sock: socket.socket | None = None
        self._stream = _ChunkedJsonStream()
        self._failed: EtcdError | None = None
        self.endpoint = ""
        self.resume_revision = start_revision
        self._last_heard = time.monotonic()
        self._open()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchBatch]:
        while True:
            batch = self.next()
            if batch is None:
                return
            yield batch

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the watch; safe from any thread, and twice."""
        with self._lock:
            self._closed = True
            sock = self._sock
            if sock is None:
                return
            # Wakes a reader blocked in recv; the reader closes the socket itself, since
            # closing a descriptor another thread is reading could hit a reused one.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            if not self._reading:
                self._sock = None
                sock.close()

    def next(self, timeout: float | None = None) -> WatchBatch | None:
        """The next batch; None when ``timeout`` passes first or the watch is closed."""
        if self._failed is not None:
            raise self._failed
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._stream.next_message()
            if message is not None:
                batch = self._batch(message)
                if batch is not None:
                    return batch
                continue
            if self._closed:
                self._release()
                return None
            if self._stream.ended:
                self._fail(EtcdUnavailable(f"the watch stream from {self.endpoint} ended"))
            wait = self.probe_interval - (time.monotonic() - self._last_heard)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            if wait <= 0:
                self._probe()
                continue
            self._receive(wait)

    # ---- inside ------------------------------------------------------------------------

    def _open(self) -> None:
        client = self._client
        deadline = time.monotonic() + client.timeout
        failures: list[str] = []
        renewed = False
        indices = client._failover_order()
        position = 0
        while position < len(indices):
            index = indices[position]
            endpoint = client._endpoints[index]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            share = remaining / (len(indices) - position)
            token = client._current_token(deadline)
            headers = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
            if token is not None:
                headers["Authorization"] = token
            try:
                self._connect(endpoint, headers, share)
                created = self._read_created(time.monotonic() + share)
            except _NotSent as error:
                failures.append(f"{endpoint.url}: {error}")
                self._discard_socket()
                position += 1
                continue
            except EtcdAuthError:
                self._discard_socket()
                # A watch refused for a stale token says "permission denied", like a
                # real refusal: with credentials, one fresh token tells them apart.
                if renewed or client._username is None:
                    raise
                client._forget_token(token)
                renewed = True
                continue
            except EtcdUnavailable as error:
                failures.append(f"{endpoint.url}: {error.message}")
                self._discard_socket()
                position += 1
                continue
            except BaseException:
                self._discard_socket()
                raise
            client._preferred = index
            self.endpoint = endpoint.url
            if not self.resume_revision:
                self.resume_revision = _header_revision(created) + 1
            self._last_heard = time.monotonic()
            return
        raise EtcdUnavailable(
            f"no etcd endpoint opened the watch within {client.timeout:g}s: "
            + ("; ".join(failures) if failures else "no time left")
        )

    def _connect(self, endpoint: _Endpoint, headers: dict[str, str], budget: float) -> None:
        sock = _open_socket(endpoint, self._client._ssl, budget)
        lines = [
            "POST /v3/watch HTTP/1.1",
            f"Host: {_host_header(endpoint.host, endpoint.port)}",
            f"Content-Length: {len(self._payload)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._stream = _ChunkedJsonStream()
        with self._lock:
            if self._closed:
                sock.close()
                raise EtcdError("the watch was closed while it opened")
            self._sock = sock
        try:
            sock.sendall(head + self._payload)
        except OSError as error:
            raise _NotSent(_describe(error)) from None

    def _read_created(self, deadline: float) -> dict[str, Any]:
        """Wait for the response head and the ``created`` message; the latter's result."""
        while True:
            message = self._stream.next_message()
            if message is not None:
                result = self._result_of(message)
                if result.get("canceled"):
                    raise self._cancel_error(result)
                if result.get("created"):
                    return result
                raise EtcdProtocolError(f"a watch answered {message!r} before 'created'")
            if self._stream.ended:
                raise EtcdUnavailable("the watch stream ended before etcd created the watch")
            left = deadline - time.monotonic()
            if left <= 0:
                raise EtcdUnavailable("etcd did not create the watch in time")
            assert self._sock is not None
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as error:
                raise EtcdUnavailable(f"the watch stream broke: {_describe(error)}") from None
            if not data:
                raise EtcdUnavailable("the member closed the watch stream before 'created'")
            self._stream.feed(data)

    def _receive(self, wait: float) -> None:
        """Read what arrives within ``wait`` seconds into the stream."""
        with self._lock:
            sock = self._sock
            if sock is None or self._closed:
                return
            self._reading = True
        try:
            # TLS may hold a decrypted record the socket no longer shows as readable.
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                ready, _, _ = select.select([sock], [], [], wait)
                if not ready:
                    return
            sock.settimeout(max(wait, 0.001))
            data = sock.recv(65536)
        except TimeoutError:
            return
        except (OSError, ValueError) as error:
            if self._closed:
                return
            self._fail(EtcdUnavailable(f"the watch stream broke: {_describe(error)}"))
        finally:
            with self._lock:
                self._reading = False
        if not data:
            if not self._closed:
                self._fail(EtcdUnavailable(f"{self.endpoint} closed the watch stream"))
            return
        self._last_heard = time.monotonic()
        self._stream.feed(data)

    def _probe(self) -> None:
        """The stream has been silent for ``probe_interval``: is its member still there,
        with a leader? (A cut cable shows as silence, not as a closed socket.)"""
        try:
            status = self._client.status(self.endpoint)
        except EtcdError as error:
            self._fail(EtcdUnavailable(f"the watch's member stopped answering: {error.message}"))
        if status.leader == 0:
            self._fail(EtcdUnavailable(f"the watch's member {self.endpoint} has no leader"))
        self._last_heard = time.monotonic()

    def _batch(self, message: dict[str, Any]) -> WatchBatch | None:
        result = self._result_of(message)
        if result.get("canceled"):
            self._fail(self._cancel_error(result))
        revision = _header_revision(result)
        events = [_watch_event(e) for e in result.get("events", [])]
        if events:
            self.resume_revision = max(self.resume_revision, events[-1].kv.mod_revision + 1)
            return WatchBatch(events, revision)
        if result.get("created"):
            return None  # only at the start, and _read_created took that one
        # No events, not a creation, not a cancel: a progress notification.
        self.resume_revision = max(self.resume_revision, revision + 1)
        return WatchBatch([], revision, progress=True)

    def _result_of(self, message: dict[str, Any]) -> dict[str, Any]:
        error = message.get("error")
        if isinstance(error, Mapping):
            code = error.get("grpc_code", error.get("code"))
            raise error_from_reply(
                code if isinstance(code, int) else None, str(error.get("message", error))
            )
        if isinstance(error, str):  # a non-200 reply: the unary error shape
            code = message.get("code")
            raise error_from_reply(
                code if isinstance(code, int) else None, str(message.get("message", error))
            )
        result = message.get("result")
        if not isinstance(result, dict):
            raise EtcdProtocolError(f"a watch message without a result: {message!r}")
        return result

    def _cancel_error(self, result: Mapping[str, Any]) -> EtcdError:
        compact_revision = _int(result.get("compact_revision"))
        if compact_revision:
            return EtcdCompacted(
                f"the watch's start revision was compacted; the oldest kept is {compact_revision}",
                _OUT_OF_RANGE,
                compact_revision=compact_revision,
            )
        reason = str(result.get("cancel_reason", "")) or "the server canceled the watch"
        typed = error_from_reply(None, reason)
        if type(typed) is EtcdError:
            return EtcdWatchCanceled(reason)
        return typed

    def _fail(self, error: EtcdError) -> Any:
        """End the watch with ``error`` (raised now, and by every later ``next``)."""
        self._failed = error
        with self._lock:
            self._closed = True
        self._release()
        raise error

    def _release(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _discard_socket(self) -> None:
        self._release()
        self._stream = _ChunkedJsonStream()


class _ChunkedJsonStream:
    """Bytes of an HTTP/1.1 response in; the newline-separated JSON objects of its
    chunked body out. Keeps partial input across reads, so a read that times out loses
    nothing (``http.client`` cannot promise that: its socket file refuses to read again
    after a timeout)."""

    _MAX_HEAD = 64 * 1024

    def __init__(self) -> None:
        self._raw = bytearray()
        self._body = bytearray()
        self._head_done = False
        self._chunked = True
        self._content_left = 0
        self.status = 0
        self._chunk_left = 0
        self._chunk_crlf = False
        self.ended = False

    def feed(self, data: bytes) -> None:
        self._raw += data
        if not self._head_done:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                if len(self._raw) > self._MAX_HEAD:
                    raise EtcdProtocolError("the watch's HTTP response head is too long")
                return
            self._parse_head(bytes(self._raw[:end]).decode("latin-1"))
            del self._raw[: end + 4]
        if self._chunked:
            self._decode_chunks()
        else:
            take = min(len(self._raw), self._content_left)
            self._body += self._raw[:take]
            del self._raw[:take]
            self._content_left -= take
            if self._content_left == 0:
                self._body += b"\n"  # a plain body is one message
                self.ended = True

    def _parse_head(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise EtcdProtocolError(f"not an HTTP response: {lines[0]!r}")
        self.status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not self._chunked:
            try:
                self._content_left = int(headers.get("content-length", "0"))
            except ValueError:
                raise EtcdProtocolError("a bad Content-Length in the watch's response") from None
            if self._content_left == 0:
                self.ended = True
        self._head_done = True

    def _decode_chunks(self) -> None:
        while not self.ended:
            if self._chunk_left:
                take = min(self._chunk_left, len(self._raw))
                if not take:
                    return
                self._body += self._raw[:take]
                del self._raw[:take]
                self._chunk_left -= take
                self._chunk_crlf = self._chunk_left == 0
                continue
            if self._chunk_crlf:
                if len(self._raw) < 2:
                    return
                if self._raw[:2] != b"\r\n":
                    raise EtcdProtocolError("a chunk of the watch stream did not end in CRLF")
                del self._raw[:2]
                self._chunk_crlf = False
                continue
            end = self._raw.find(b"\r\n")
            if end < 0:
                if len(self._raw) > 1024:
                    raise EtcdProtocolError("a chunk size line of the watch stream is too long")
                return
            size_text = bytes(self._raw[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise EtcdProtocolError(f"a bad chunk size {size_text!r}") from None
            del self._raw[: end + 2]
            if size == 0:
                self.ended = True
                return
            self._chunk_left = size

    def next_message(self) -> dict[str, Any] | None:
        while True:
            end = self._body.find(b"\n")
            if end < 0:
                return None
            line = bytes(self._body[:end]).strip()
            del self._body[: end + 1]
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                raise EtcdProtocolError(f"a watch message is not JSON: {line[:200]!r}") from None
            if not isinstance(message, dict):
                raise EtcdProtocolError(f"a watch message is not an object: {line[:200]!r}")
            return message


# ---- JSON helpers -------------------------------------------------------------------------


def _bytes(data: Key) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _b64(data: Key) -> str:
    return base64.b64encode(_bytes(data)).decode("ascii")


def _b64decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise EtcdProtocolError(f"expected base64 text, got {text!r}")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise EtcdProtocolError(f"not base64: {text[:100]!r}") from None


def _int(value: Any) -> int:
    """An int64 field: a JSON string (how the gateway sends them), a number, or absent
    (how it sends a zero)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise EtcdProtocolError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EtcdProtocolError(f"expected an integer, got {value!r}") from None


def prefix_range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range_end for a
    prefix): the prefix with its last byte below 0xff incremented, or ``b"\\0"``
    (everything to the end) when there is none."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _range_body(key: Key, prefix: bool) -> dict[str, Any]:
    raw = _bytes(key)
    if not prefix:
        if not raw:
            raise ValueError("an etcd key cannot be empty")
        return {"key": _b64(raw)}
    if not raw:  # every key: from "\0" to the end
        return {"key": _b64(b"\0"), "range_end": _b64(b"\0")}
    return {"key": _b64(raw), "range_end": _b64(prefix_range_end(raw))}


def _header_revision(reply: Mapping[str, Any]) -> int:
    header = reply.get("header")
    return _int(header.get("revision")) if isinstance(header, Mapping) else 0


def _op_result(response: Mapping[str, Any], txn_revision: int) -> OpResult:
    if "response_range" in response:
        r = response["response_range"]
        return Range([KeyValue.from_json(kv) for kv in r.get("kvs", [])], txn_revision)
    if "response_put" in response:
        r = response["response_put"]
        prev = r.get("prev_kv")
        return PutResult(txn_revision, KeyValue.from_json(prev) if prev else None)
    if "response_delete_range" in response:
        r = response["response_delete_range"]
        prev_kvs = [KeyValue.from_json(kv) for kv in r.get("prev_kvs", [])]
        return Deleted(_int(r.get("deleted")), txn_revision, prev_kvs)
    raise EtcdProtocolError(f"a txn response of an unknown kind: {response!r}")


def _watch_event(data: Mapping[str, Any]) -> WatchEvent:
    kind = data.get("type", "PUT")  # PUT is the enum's zero: omitted
    if kind not in ("PUT", "DELETE"):
        raise EtcdProtocolError(f"a watch event of an unknown type: {kind!r}")
    prev = data.get("prev_kv")
    return WatchEvent(
        type=kind,
        kv=KeyValue.from_json(data.get("kv", {})),
        prev_kv=KeyValue.from_json(prev) if prev else None,
    )


def _parse_reply(status: int, data: bytes, stream: bool, write: bool) -> dict[str, Any]:
    """A unary reply's JSON object, or the typed error it carries. For a stream, the
    first message (``{"result": ...}`` or ``{"error": {...}}``)."""
    text = data.split(b"\n", 1)[0] if stream else data
    try:
        reply = json.loads(text) if text.strip() else {}
    except ValueError:
        if status != 200:
            raise EtcdProtocolError(f"HTTP {status}: {data[:200]!r}") from None
        raise EtcdProtocolError(f"a reply that is not JSON: {data[:200]!r}") from None
    if not isinstance(reply, dict):
        raise EtcdProtocolError(f"a reply that is not a JSON object: {data[:200]!r}")
    error = reply.get("error")
    if isinstance(error, Mapping):  # a stream's error
        code = error.get("grpc_code")
        raise error_from_reply(
            code if isinstance(code, int) else None, str(error.get("message", "")), write=write
        )
    if status != 200 or error is not None:
        code = reply.get("code")
        message = str(reply.get("message") or error or f"HTTP {status}")
        raise error_from_reply(code if isinstance(code, int) else None, message, write=write)
    if stream:
        result = reply.get("result")
        if not isinstance(result, dict):
            raise EtcdProtocolError(f"a stream message without a result: {data[:200]!r}")
        return result
    return reply


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

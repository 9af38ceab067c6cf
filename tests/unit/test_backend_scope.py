"""The global backend's plumbing without a cluster: ``Deferred``, loading a backend's
``[backend]`` settings, and choosing the backend that serves ``scope="global"``."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from thespian_cluster.backends import GlobalGroupsBackend, LocalBackend
from thespian_cluster.backends.loading import BackendLoadError, backend_config, scope_backend
from thespian_cluster.backends.scope import Deferred, GlobalBackend
from thespian_cluster.backends.sequenced import SequencedBackend, SequencedConfig
from thespian_cluster.messages import (
    ErrorCode,
    Register,
    Registered,
    RegistryError,
    Reply,
    Request,
    Unregistered,
)
from thespian_cluster.settings import ClusterSettings

REPO = Path(__file__).parents[2]
HERE = __name__  # backends below are loaded by dotted path, as a node loads them


# ---- Deferred --------------------------------------------------------------------------


def deferred() -> tuple[Deferred, list[Reply]]:
    sent: list[Reply] = []
    request = Register.model_construct(request_id="r1", name="n", address=None)
    return Deferred(request, deadline=0.0, send=sent.append), sent


def test_a_deferred_sends_its_first_answer_only() -> None:
    reply, sent = deferred()
    first = Unregistered(request_id="r1", name="n", kind="server")
    reply.resolve(first)
    reply.resolve(Unregistered(request_id="r1", name="other", kind="server"))
    reply.fail(ErrorCode.UNAVAILABLE, "too late")
    assert sent == [first] and reply.done


def test_an_expired_deferred_answers_timeout_and_runs_its_callbacks() -> None:
    reply, sent = deferred()
    ran: list[str] = []
    reply.on_expire(lambda: ran.append("first"))
    reply.on_expire(lambda: ran.append("second"))
    reply.expire("no answer in 5 s")
    assert len(sent) == 1 and isinstance(sent[0], RegistryError)
    answer = sent[0]
    assert (answer.code, answer.detail, answer.request_id) == ("timeout", "no answer in 5 s", "r1")
    assert ran == ["first", "second"]
    reply.expire("again")  # a second deadline answers nothing and runs nothing
    assert len(sent) == 1 and ran == ["first", "second"]


def test_a_deferred_answered_in_time_ignores_its_deadline() -> None:
    reply, sent = deferred()
    ran: list[str] = []
    reply.on_expire(lambda: ran.append("expired"))
    answer = Registered(request_id="r1", name="n", kind="server", address=None, node="a")
    reply.resolve(answer)
    reply.expire("late")
    assert sent == [answer] and ran == []


# ---- [backend] settings ------------------------------------------------------------------


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    endpoints: list[str]
    name: str = ""
    timeout: float = Field(1.0, gt=0)
    password: str = ""


class StoreScope(GlobalBackend):
    config_model = StoreConfig

    def write(self, request: Request, reply: Deferred) -> None:
        raise NotImplementedError

    def status(self, request_id: str) -> Any:
        raise NotImplementedError


class StoreNodeBackend(LocalBackend):
    global_scope = StoreScope


class OldStyleDistributed(LocalBackend):
    """A backend from before global_scope: it only said it was distributed."""

    def is_distributed(self) -> bool:
        return True


class NotAScope(LocalBackend):
    global_scope = dict  # type: ignore[assignment]


STORE = f"{HERE}:StoreNodeBackend"


def test_backend_settings_are_validated_against_the_backends_model() -> None:
    config = backend_config(STORE, {"endpoints": ["http://a:2379"], "timeout": 2})
    assert config == StoreConfig(endpoints=["http://a:2379"], timeout=2.0)


def test_an_unknown_backend_setting_is_named() -> None:
    with pytest.raises(BackendLoadError) as caught:
        backend_config(STORE, {"endpoints": [], "endpont": "x"})
    assert f"backend.endpont: unknown setting of registry_backend = {STORE!r}" in str(caught.value)


def test_a_wrong_type_names_the_key_and_the_value() -> None:
    with pytest.raises(BackendLoadError, match=r"backend\.timeout = 'soon': ") as caught:
        backend_config(STORE, {"endpoints": [], "timeout": "soon"})
    assert "endpoints" not in str(caught.value)  # only what is wrong
    with pytest.raises(BackendLoadError, match=r"backend\.timeout = -1: .*greater than 0"):
        backend_config(STORE, {"endpoints": [], "timeout": -1})
    with pytest.raises(BackendLoadError) as missing:
        backend_config(STORE, {})
    assert str(missing.value) == (
        f"invalid settings: backend.endpoints: Field required by registry_backend = {STORE!r}"
    )


def test_a_password_is_never_shown() -> None:
    with pytest.raises(BackendLoadError) as caught:
        backend_config(STORE, {"endpoints": [], "password": 12345678})
    assert "backend.password = <hidden>" in str(caught.value)
    assert "12345678" not in str(caught.value)


def test_a_json_string_from_the_environment_fills_a_list() -> None:
    config = backend_config(STORE, {"endpoints": '["http://a:2379", "http://b:2379"]'})
    assert isinstance(config, StoreConfig)
    assert config.endpoints == ["http://a:2379", "http://b:2379"]


def test_only_the_keys_that_failed_are_read_as_json() -> None:
    # "123" is a valid name as it is; read as JSON it would be an int, and fail.
    config = backend_config(STORE, {"endpoints": '["http://a:2379"]', "name": "123"})
    assert isinstance(config, StoreConfig) and config.name == "123"


def test_a_string_that_is_no_json_list_is_still_refused() -> None:
    with pytest.raises(BackendLoadError, match=r"backend\.endpoints = 'http://a:2379'"):
        backend_config(STORE, {"endpoints": "http://a:2379"})


def test_backend_settings_for_a_local_only_backend_are_an_error() -> None:
    with pytest.raises(BackendLoadError, match="takes no backend settings"):
        backend_config("local", {"path": "/tmp/x"})
    assert backend_config("local", {}) is None


def test_a_backend_without_a_model_takes_an_empty_table_only() -> None:
    assert backend_config("global", {}) is not None
    with pytest.raises(BackendLoadError, match=r"backend\.path: unknown setting"):
        backend_config("global", {"path": "/tmp/x"})


def test_the_built_in_backend_takes_a_merge_resolver_it_can_import() -> None:
    path = "tests.cluster.resolvers:newest_claim_wins"
    assert backend_config("global", {"merge_resolver": path}) == SequencedConfig(
        merge_resolver=path
    )
    for wrong, why in [
        ("tests.cluster.resolvers", "is not 'package.module:function'"),
        ("no_such_module_here:f", "cannot import no_such_module_here"),
        ("tests.cluster.resolvers:nothing", "has no function nothing"),
        ("json:dumps", "must take (a, b, winners)"),
        (".relative:f", "cannot import .relative: TypeError"),
    ]:
        with pytest.raises(BackendLoadError, match=r"backend\.merge_resolver = ") as caught:
            backend_config("global", {"merge_resolver": wrong})
        assert why in str(caught.value) and "\n" not in str(caught.value)


def test_the_docs_sqlite_backend_refuses_a_path_in_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (REPO / "docs" / "backends.md").read_text()
    source = re.search(r"<!-- global backend example -->\s*```python\n(.*?)```", text, re.S)
    assert source is not None
    (tmp_path / "sqlite_scope.py").write_text(source.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sqlite_scope", raising=False)
    spec = "sqlite_scope:SqliteNodeBackend"
    config = backend_config(spec, {"path": str(tmp_path / "scope.sqlite"), "poll_interval": "0.5"})
    assert config is not None and config.model_dump()["poll_interval"] == 0.5
    with pytest.raises(BackendLoadError, match=r"backend\.path = .*missing is not a directory"):
        backend_config(spec, {"path": str(tmp_path / "missing" / "scope.sqlite")})


# ---- [backend] in ClusterSettings -----------------------------------------------------------


def test_the_file_table_and_the_environment_merge_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'node_name = "a"\n\n[backend]\npath = "/from/file.sqlite"\npoll_interval = 0.5\n'
    )
    monkeypatch.setenv("THESPIAN_CLUSTER_BACKEND__PATH", "/from/env.sqlite")
    settings = ClusterSettings.load(config)
    assert settings.backend == {"path": "/from/env.sqlite", "poll_interval": 0.5}
    # build() with the file's values, as load() calls it; keyword overrides win per key too
    built = ClusterSettings.build(
        {"backend": {"path": "/from/file.sqlite", "poll_interval": 0.5}},
        backend={"poll_interval": 2},
    )
    assert built.backend == {"path": "/from/env.sqlite", "poll_interval": 2}


def test_no_backend_table_is_an_empty_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THESPIAN_CLUSTER_BACKEND__PATH", raising=False)
    assert ClusterSettings.build().backend == {}


# ---- which GlobalBackend serves scope "global" ------------------------------------------------


def test_the_local_backend_serves_no_global_scope() -> None:
    with pytest.raises(BackendLoadError, match="serves the local scope only"):
        scope_backend("local")


def test_the_global_backend_is_the_sequencer_protocol() -> None:
    assert scope_backend("global") is SequencedBackend
    assert GlobalGroupsBackend.global_scope is SequencedBackend


def test_a_named_global_scope_is_used() -> None:
    assert scope_backend(STORE) is StoreScope


def test_an_old_distributed_backend_gets_the_built_in_global_scope() -> None:
    assert scope_backend(f"{HERE}:OldStyleDistributed") is SequencedBackend


def test_a_global_scope_that_is_no_global_backend_is_refused() -> None:
    with pytest.raises(BackendLoadError, match="its global_scope is not a GlobalBackend"):
        scope_backend(f"{HERE}:NotAScope")

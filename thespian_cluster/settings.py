"""Node settings: one pydantic model, loaded from a TOML file and ``THESPIAN_CLUSTER_*``.

Precedence, highest first: keyword arguments, environment variables
(``THESPIAN_CLUSTER_ADMIN_PORT=1901``), the TOML file, the defaults below.
The TOML file holds the keys at top level::

    node_name = "node-a"
    admin_port = 1900
    cluster_enabled = true
    cluster_nodes = ["node-a", "node-b", "node-c"]

A wrong value raises :class:`SettingsError`, which names the key, the value and
what is allowed.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

ENV_PREFIX = "THESPIAN_CLUSTER_"
MIN_COOKIE_BYTES = 16

SplitBrainStrategy = Literal["winner_takes_all", "oldest_node", "configured_master"]
MinorityAction = Literal["advisory", "readonly", "shutdown"]
LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(ValueError):
    """Settings that cannot be used; the message says which key and why."""


def _default_data_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "thespian-cluster"


class ClusterSettings(BaseSettings):
    """Everything a node needs to start. See docs/operations.md for each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # ---- this node ----
    node_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    host: str = Field("127.0.0.1", description="address the admin and actors bind to")
    admin_port: int = Field(1900, ge=1, le=65535)
    convention_leader: str | None = Field(
        None, description="host:port of the convention leader's admin; None on the leader"
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: LogLevel = "INFO"
    log_file: Path | None = Field(None, description="default: <data_dir>/<node_name>/node.log")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve /metrics, /healthz and /readyz on host:metrics_port (off if unset)",
    )

    # ---- registry ----
    registry_backend: str = Field("local", min_length=1)
    #: The backend's own settings: the ``[backend]`` table, or
    #: ``THESPIAN_CLUSTER_BACKEND__<KEY>`` variables (a JSON value, or a plain string).
    #: Checked against the backend's ``config_model`` when the node starts.
    backend: dict[str, Any] = Field(default_factory=dict)
    global_request_timeout: float = Field(
        5.0, gt=0, le=600, description="seconds a global write may wait for its backend"
    )
    liveness_probe_interval: float = Field(1.0, gt=0, le=3600)
    liveness_probe_batch: int = Field(200, ge=1, le=100_000)
    global_peer_links: bool = Field(
        True,
        description="carry the global scope's writes, decisions and deltas between "
        "RegistryDists on direct TCP links (sealed like Thespian's packets)",
    )

    # ---- cluster (the seeds' keys) ----
    cluster_enabled: bool = False
    cluster_nodes: list[str] = Field(default_factory=list)
    cluster_cookie: SecretStr | None = None
    allow_short_cookie: bool = False
    message_modules: list[str] = Field(default_factory=list)
    cluster_heartbeat_interval: float = Field(0.25, gt=0, le=600)
    cluster_heartbeat_timeout: float = Field(2.5, gt=0, le=3600)
    node_check_interval: float = Field(0.1, gt=0, le=600)
    split_brain_strategy: SplitBrainStrategy = "winner_takes_all"
    split_brain_check_interval: float = Field(5.0, gt=0, le=3600)
    split_brain_minority_action: MinorityAction = "readonly"
    master_node: str | None = None

    @field_validator("convention_leader")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port, e.g. 10.0.0.1:1900")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if "registry_backend" not in self.model_fields_set and self.cluster_enabled:
            # A cluster node serves scope "global" unless told otherwise.
            object.__setattr__(self, "registry_backend", "global")
        if self.split_brain_strategy == "configured_master" and not self.master_node:
            raise ValueError("split_brain_strategy 'configured_master' needs master_node")
        cookie = self.cluster_cookie
        short = cookie is not None and len(cookie.get_secret_value().encode()) < MIN_COOKIE_BYTES
        if short and not self.allow_short_cookie:
            raise ValueError(
                f"cluster_cookie must be at least {MIN_COOKIE_BYTES} bytes "
                "(set allow_short_cookie = true for local development)"
            )
        if self.cluster_heartbeat_timeout <= self.cluster_heartbeat_interval:
            raise ValueError("cluster_heartbeat_timeout must exceed cluster_heartbeat_interval")
        return self

    # ---- derived ----

    @property
    def node_dir(self) -> Path:
        """Where this node keeps its table, logs and pid file."""
        return self.data_dir / f"{self.node_name}-{self.admin_port}"

    @property
    def resolved_log_file(self) -> Path:
        return self.log_file or self.node_dir / "node.log"

    @property
    def admin_address(self) -> str:
        return f"{self.host}:{self.admin_port}"

    # ---- loading ----

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ClusterSettings:
        """Settings from an optional TOML file, the environment and ``overrides``."""
        file_values: dict[str, Any] = {}
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    file_values = tomllib.load(handle)
            except OSError as exc:
                raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
        return cls.build(_file_values=file_values, **overrides)

    @classmethod
    def build(cls, _file_values: dict[str, Any] | None = None, **overrides: Any) -> ClusterSettings:
        """Validate file values < environment < ``overrides`` into one :class:`SettingsError`."""
        try:
            from_env = EnvSettingsSource(cls)()
            values = {**(_file_values or {}), **from_env, **overrides}
            # [backend] merges key by key: a variable overrides one key, not the table.
            tables = [v.get("backend") for v in (_file_values or {}, from_env, overrides)]
            if all(isinstance(t, dict) for t in tables if t is not None) and any(tables):
                values["backend"] = {k: v for t in tables if t for k, v in t.items()}
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown setting")
        elif not key:  # a rule across keys
            problems.append(message)
        else:
            problems.append(f"{key} = {_shown(key, error.get('input'))}: {message}")
    return "invalid settings: " + "; ".join(problems)


def _shown(key: str, value: Any) -> str:
    if "cookie" in key:
        return "<hidden>"
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."

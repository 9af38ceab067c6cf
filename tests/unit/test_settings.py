"""Settings: TOML file < environment < arguments, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from thespian_cluster import ClusterSettings, SettingsError
from thespian_cluster.backends.loading import BackendLoadError, backend_class


def test_defaults_match_the_seeds() -> None:
    settings = ClusterSettings.build()
    assert settings.cluster_enabled is False
    assert settings.split_brain_strategy == "winner_takes_all"
    assert settings.registry_backend == "local"
    assert settings.host == "127.0.0.1"


def test_file_then_environment_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('node_name = "from-file"\nadmin_port = 2000\ncluster_nodes = ["a"]\n')
    assert ClusterSettings.load(config).admin_port == 2000
    monkeypatch.setenv("THESPIAN_CLUSTER_ADMIN_PORT", "2001")
    monkeypatch.setenv("THESPIAN_CLUSTER_CLUSTER_NODES", '["a", "b"]')
    settings = ClusterSettings.load(config)
    assert (settings.node_name, settings.admin_port, settings.cluster_nodes) == (
        "from-file",
        2001,
        ["a", "b"],
    )
    assert ClusterSettings.load(config, admin_port=2002).admin_port == 2002


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"split_brain_strategy": "coin_flip"}, "split_brain_strategy = 'coin_flip'"),
        ({"admin_port": 70000}, "admin_port = 70000"),
        ({"cluster_heartbeat_interval": -1}, "cluster_heartbeat_interval = -1"),
        ({"split_brain_strategy": "configured_master"}, "needs master_node"),
        ({"colour": "blue"}, "colour: unknown setting"),
        ({"convention_leader": "nohost"}, "expected host:port"),
        ({"cluster_cookie": "short"}, "at least 16 bytes"),
    ],
)
def test_wrong_values_name_the_key_value_and_rule(values: dict, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected.replace("(", r"\(")):
        ClusterSettings.build(**values)


def test_allowed_values_are_listed() -> None:
    with pytest.raises(SettingsError) as error:
        ClusterSettings.build(split_brain_strategy="x")
    assert "'winner_takes_all', 'oldest_node' or 'configured_master'" in str(error.value)


def test_cookie_never_appears_in_errors_or_dumps() -> None:
    secret = "s3cr3t-value-0123456789"
    settings = ClusterSettings.build(cluster_cookie=secret)
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    with pytest.raises(SettingsError) as error:
        ClusterSettings.build(cluster_cookie=secret, admin_port="nope")
    assert secret not in str(error.value)


def test_short_cookie_allowed_for_local_development() -> None:
    assert ClusterSettings.build(cluster_cookie="dev", allow_short_cookie=True).cluster_cookie


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        ClusterSettings.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node_name = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        ClusterSettings.load(bad)


def test_example_configs_load() -> None:
    root = Path(__file__).parents[2] / "config"
    loaded = [ClusterSettings.load(path) for path in sorted(root.glob("*.toml"))]
    assert len(loaded) >= 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch", "expected one of"),
        ("no_such_module:Backend", "cannot import"),
        ("thespian_cluster.backends.local:Nope", "has no Nope"),
        ("thespian_cluster.settings:ClusterSettings", "is not a RegistryBehavior"),
    ],
)
def test_bad_backend_paths_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(BackendLoadError, match=message):
        backend_class(spec)

"""Which cookie a node or client uses, from the setting and the two environment variables
(docs/security.md, "Where the cookie comes from").

``THESPIAN_CLUSTER_CLUSTER_COOKIE`` is the ``cluster_cookie`` setting (every setting
has its ``THESPIAN_CLUSTER_<KEY>``); ``THESPIAN_CLUSTER_COOKIE`` is read only when
that setting is unset (``security.resolve_cookie``, which wire security and the
heartbeat key both use).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from thespian_cluster.security import COOKIE_ENV, install_from_settings, resolve_cookie
from thespian_cluster.settings import ENV_PREFIX, ClusterSettings, SettingsError

SETTING_ENV = f"{ENV_PREFIX}CLUSTER_COOKIE"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_cookie_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTING_ENV, raising=False)
    monkeypatch.delenv(COOKIE_ENV, raising=False)


def cookie_of(settings: ClusterSettings) -> str | None:
    return resolve_cookie(settings.cluster_cookie)


def test_the_names_are_the_documented_ones() -> None:
    assert (SETTING_ENV, COOKIE_ENV) == (
        "THESPIAN_CLUSTER_CLUSTER_COOKIE",
        "THESPIAN_CLUSTER_COOKIE",
    )
    security = (REPO / "docs" / "security.md").read_text()
    assert SETTING_ENV in security and COOKIE_ENV in security


def test_either_variable_alone_gives_the_cookie(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COOKIE_ENV, "the-client-variable-0123")
    assert cookie_of(ClusterSettings.build()) == "the-client-variable-0123"
    monkeypatch.delenv(COOKIE_ENV)
    monkeypatch.setenv(SETTING_ENV, "the-setting-variable-0123")
    assert cookie_of(ClusterSettings.build()) == "the-setting-variable-0123"


def test_with_both_set_the_setting_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING_ENV, "the-setting-variable-0123")
    monkeypatch.setenv(COOKIE_ENV, "the-client-variable-0123")
    assert cookie_of(ClusterSettings.build()) == "the-setting-variable-0123"


def test_the_order_from_highest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # keyword > THESPIAN_CLUSTER_CLUSTER_COOKIE > TOML file > THESPIAN_CLUSTER_COOKIE
    toml = tmp_path / "node.toml"
    toml.write_text('cluster_cookie = "the-toml-file-cookie-0123"\n')
    monkeypatch.setenv(COOKIE_ENV, "the-client-variable-0123")
    assert cookie_of(ClusterSettings.load(toml)) == "the-toml-file-cookie-0123"
    monkeypatch.setenv(SETTING_ENV, "the-setting-variable-0123")
    assert cookie_of(ClusterSettings.load(toml)) == "the-setting-variable-0123"
    keyword = ClusterSettings.load(toml, cluster_cookie="the-keyword-cookie-0123")
    assert cookie_of(keyword) == "the-keyword-cookie-0123"


def test_a_short_cookie_is_refused_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING_ENV, "short")
    with pytest.raises(SettingsError, match="cluster_cookie must be at least 16 bytes"):
        ClusterSettings.build()
    monkeypatch.delenv(SETTING_ENV)
    monkeypatch.setenv(COOKIE_ENV, "short")
    with pytest.raises(SettingsError, match=f"{COOKIE_ENV} must be at least 16 bytes"):
        install_from_settings(ClusterSettings.build())  # refused before anything is installed

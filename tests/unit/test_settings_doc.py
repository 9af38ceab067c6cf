"""docs/operations.md's settings and metrics references match the code they describe."""

from __future__ import annotations

from thespian_cluster import settings_doc
from thespian_cluster.settings import ClusterSettings


def test_the_doc_matches_the_settings_model_and_the_metrics() -> None:
    doc = settings_doc.DOC.read_text()
    for begin, end, text in settings_doc.blocks():
        assert settings_doc.current(doc, begin, end) == text, (
            "docs/operations.md is out of date: run "
            "`python -m thespian_cluster.settings_doc --write`"
        )


def test_every_setting_has_a_meaning_and_no_meaning_is_stale() -> None:
    assert set(settings_doc.MEANINGS) == set(ClusterSettings.model_fields)

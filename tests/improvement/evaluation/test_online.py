"""improvement.evaluation.online: the interleaving harness (``manage.py evaluate --online``) on a tiny collection."""

from __future__ import annotations

from clickstream.experiments import sessions_to_significance
from improvement.evaluation import online
from tests.improvement.evaluation.support import evaluation_databases, tiny_collection


def test_sessions_to_significance_counts_sessions_until_the_sign_test_first_passes():
    assert sessions_to_significance([1] * 5) is None  # five straight wins: two-sided p = 0.0625
    assert sessions_to_significance([1] * 6) == 6  # six: p = 0.031
    assert sessions_to_significance([0, 0, 1, 1, 0, 1, 1, 1, 1]) == 9  # ties and no-click sessions count too
    assert sessions_to_significance([1, -1] * 20) is None


def test_the_harness_interleaves_every_training_search_and_reports_each_arm(tmp_path, unblocked_database):
    tiny_collection(tmp_path / "tiny")
    result = online.run_online(dataset_name=f"beir:{tmp_path / 'tiny'}", seeds=[0], users=6, rounds=2, progress=False)
    assert [row["arm"] for row in result["rows"]] == list(online.ONLINE_ARMS)
    for row in result["rows"]:
        assert row["sessions"] > 0 and row["wins"] + row["losses"] + row["ties_or_no_click"] == row["sessions"]
        assert 0 <= row["p_value"] <= 1 and isinstance(row["agrees"], bool)
    assert set(result["summary"]) == set(online.ONLINE_ARMS)
    online.write(result, tmp_path / "out")
    assert "| studio | 0 |" in (tmp_path / "out" / "online.md").read_text()
    assert not evaluation_databases()

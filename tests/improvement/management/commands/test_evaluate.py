"""improvement.management.commands.evaluate: a test-size evaluation through the real loop (``manage.py evaluate``
on a tiny BEIR-layout folder in a throwaway database)."""

from __future__ import annotations

import json

from django.core.management import call_command

from tests.improvement.evaluation.support import evaluation_databases, tiny_collection


def test_test_size_evaluation_beats_no_feedback_and_keeps_guards(tmp_path, unblocked_database):
    tiny_collection(tmp_path / "tiny")
    before = set(evaluation_databases())
    out = tmp_path / "report"
    call_command(
        "evaluate",
        "--dataset",
        f"beir:{tmp_path / 'tiny'}",
        "--users",
        "16",
        "--queries-per-user",
        "2",
        "--rounds",
        "3",
        "--out",
        str(out),
        "--no-progress",
        "--bootstrap",
        "500",
    )
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"dataset", "params", "arms", "guards", "runtime_seconds"}
    arms = {"no_feedback", "embedding_studio", "studio_v1", "studio_personal", "studio", "oracle"}
    assert set(report["arms"]) == arms
    assert set(report["arms"]["studio"]) == {"seen", "related", "cold"}
    assert set(report["arms"]["studio"]["seen"]) >= {"ndcg@10", "delta", "evicted_relevant", "evicted_untouched"}

    seen = report["arms"]["studio"]["seen"]["delta"]["ndcg@10"]
    assert seen["low"] > 0, seen  # studio defaults beat no feedback on the repeated queries
    assert report["arms"]["oracle"]["seen"]["delta"]["ndcg@10"]["mean"] > 0
    # The shared tier helps users who never clicked (the cold view) …
    assert report["arms"]["studio"]["cold"]["delta"]["ndcg@10"]["low"] > 0
    assert report["arms"]["studio_personal"]["cold"]["delta"]["ndcg@10"]["mean"] == 0  # … copies alone cannot
    guards = ("other_users_unchanged", "anonymous_unchanged", "drift_ok", "single_user_invisible", "forget_exact")
    assert report["guards"] == dict.fromkeys((*guards, "anonymous_not_worse"), True)

    details = report["arm_details"]
    assert details["studio"]["events_recorded"] > 0 and details["studio"]["improvement_runs"] == 3
    assert details["studio"]["guards"]["copies"] > 0
    assert details["no_feedback"]["guards"]["copies"] == 0
    curve = report["curves"]["studio"]
    assert len(curve) == 3 + 1 and curve[-1] > curve[0]
    assert len(set(report["curves"]["no_feedback"])) == 1  # nothing learned, nothing moves
    assert (out / "ndcg.png").stat().st_size > 0 and "| studio |" in (out / "report.md").read_text()
    # The throwaway database is gone and the connection points back where it was.
    assert set(evaluation_databases()) == before

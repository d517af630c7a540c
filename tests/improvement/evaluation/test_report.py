"""improvement.evaluation.report: the report's shape, its Markdown tables and its plot. No database."""

from __future__ import annotations

import json
import math

import pytest

from improvement.evaluation import metrics
from improvement.evaluation.datasets import EvalDataset, EvalObject, SimUser
from improvement.evaluation.loop import ArmOutcome
from improvement.evaluation.report import build_report, markdown_tables, write_report


def _fake_outcomes(dataset: EvalDataset) -> list[ArmOutcome]:
    good = {(u, 0): (["a", "b"], [0.1, 0.2]) for u in range(len(dataset.users))}
    bad = {(u, 0): (["b", "a"], [0.1, 0.2]) for u in range(len(dataset.users))}
    guards = {"other_users_unchanged": True, "anonymous_unchanged": True, "drift_ok": True}
    return [
        ArmOutcome("no_feedback", {}, {"seen": bad}, [0.5, 0.5], {}, guards=dict(guards)),
        ArmOutcome("studio", {}, {"seen": good}, [0.5, 1.0], {}, guards=dict(guards)),
        ArmOutcome("embedding_studio", {}, {"seen": bad}, [0.5, 0.4], {}, guards={**guards, "drift_ok": False}),
    ]


def test_report_shape(tmp_path):
    dataset = EvalDataset(
        name="tiny",
        objects=[EvalObject("a", "a", {}), EvalObject("b", "b", {})],
        queries={"q": "q"},
        users=[SimUser(f"u{i}", train=[("q", {"a": 2})], views={"seen": [("q", {"a": 2})]}) for i in range(5)],
        views=("seen",),
    )
    report = build_report(dataset=dataset, outcomes=_fake_outcomes(dataset), params={"users": 5}, runtime_seconds=1.234)
    assert list(report)[:5] == ["dataset", "params", "arms", "guards", "runtime_seconds"]
    assert set(report["guards"]) == {
        "other_users_unchanged",
        "anonymous_unchanged",
        "drift_ok",
        "single_user_invisible",
        "forget_exact",
    }
    assert report["guards"]["drift_ok"] is True  # Embedding Studio runs without rails: not guarded
    for arm in ("no_feedback", "studio", "embedding_studio"):
        view = report["arms"][arm]["seen"]
        for metric in metrics.METRICS:
            assert set(view[metric]) == {"mean", "low", "high"}
            assert set(view["delta"][metric]) == {"mean", "low", "high"}
    studio = report["arms"]["studio"]["seen"]
    assert studio["ndcg@10"]["mean"] == pytest.approx(1.0)
    assert studio["delta"]["ndcg@10"]["mean"] == pytest.approx(1.0 - 1 / math.log2(3))
    assert studio["delta"]["mrr@10"] == {"mean": 0.5, "low": 0.5, "high": 0.5}
    assert report["targets"]["seen_interval_above_0"] and report["targets"]["not_below_embedding_studio"]
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == report
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert "| studio | 1.0000 [1.0000, 1.0000]" in text and "ndcg.png" in text
    assert markdown_tables(report).count("####") == 1

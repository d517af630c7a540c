"""Unit tests of the evaluation harness: metrics by hand, click models, bootstrap, data set readers,
report shape. No database."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from improvement.evaluation import metrics
from improvement.evaluation.clicks import CascadeModel, PositionBasedModel, make_click_model
from improvement.evaluation.datasets import EvalDataset, EvalObject, SimUser, load_beir, load_movielens, user_half
from improvement.evaluation.loop import ArmOutcome, standard_arms
from improvement.evaluation.report import build_report, markdown_tables, write_report

# --- metrics ---------------------------------------------------------------------------------------


def test_ndcg_by_hand():
    relevance = {"a": 2, "c": 1, "d": 1}
    # DCG: (2²−1)/log2(2) + 0 + (2¹−1)/log2(4) = 3 + 0.5; ideal [2, 1, 1]: 3 + 1/log2(3) + 0.5
    expected = 3.5 / (3 + 1 / math.log2(3) + 0.5)
    assert metrics.ndcg_at(["a", "b", "c"], relevance, 10) == pytest.approx(expected)
    assert metrics.ndcg_at(["a", "d", "c"], relevance, 10) == pytest.approx(1.0)
    assert metrics.ndcg_at(["b", "a"], relevance, 1) == 0.0
    assert metrics.ndcg_at(["a"], {}, 10) == 0.0


def test_mrr_and_recall_by_hand():
    relevance = {"c": 1, "x": 2, "y": 1, "z": 1}
    assert metrics.mrr_at(["a", "c", "x"], relevance, 10) == 0.5
    assert metrics.mrr_at(["a", "b", "c"], relevance, 2) == 0.0
    assert metrics.recall_at(["a", "c", "x"], relevance, 10) == 0.5
    assert metrics.recall_at(["a", "c", "x"], relevance, 2) == 0.25
    assert metrics.recall_at(["a"], {"a": 0}, 10) == 0.0
    scores = metrics.score_ranking(["x", "c"], relevance)
    assert set(scores) == set(metrics.METRICS)
    assert scores["mrr@10"] == 1.0 and scores["recall@100"] == 0.5


def test_bootstrap_interval():
    constant = metrics.bootstrap_interval([0.25] * 20)
    assert constant == {"mean": 0.25, "low": 0.25, "high": 0.25}
    values = np.random.default_rng(1).normal(0.1, 0.05, size=200)
    first = metrics.bootstrap_interval(values, seed=7)
    assert first == metrics.bootstrap_interval(values, seed=7)  # fixed seed: reproducible
    assert first["low"] < first["mean"] < first["high"]
    # The percentile interval matches the normal one: mean ± 1.96 standard errors (within 15 %).
    half_width = 1.96 * values.std() / math.sqrt(values.size)
    assert (first["high"] - first["low"]) / 2 == pytest.approx(half_width, rel=0.15)
    assert first["mean"] == pytest.approx(values.mean())
    assert math.isnan(metrics.bootstrap_interval([float("nan")])["mean"])


# --- click models -----------------------------------------------------------------------------------


def test_pbm_without_position_bias_clicks_by_grade():
    model = PositionBasedModel(eta=0.0, probabilities=(0.0, 0.0, 1.0))
    assert model.clicks([0, 2, 1, 2], np.random.default_rng(0)) == [1, 3]


def test_pbm_examination_falls_with_position():
    model = PositionBasedModel(eta=1.0, probabilities=(0.05, 0.5, 1.0))
    rng = np.random.default_rng(3)
    counts = np.zeros(5)
    trials = 20_000
    for _ in range(trials):
        for position in model.clicks([2] * 5, rng):
            counts[position] += 1
    expected = np.array([1 / (r + 1) for r in range(5)])
    assert np.allclose(counts / trials, expected, atol=0.015)


def test_pbm_is_deterministic_for_a_seed():
    model = make_click_model("pbm", eta=1.0)
    grades = [2, 0, 1, 1, 0, 2, 0, 0, 1, 0]
    first = [model.clicks(grades, np.random.default_rng([0, r])) for r in range(50)]
    again = [model.clicks(grades, np.random.default_rng([0, r])) for r in range(50)]
    assert first == again
    assert any(first) and not all(first)


def test_cascade_stops_at_the_first_click():
    model = CascadeModel(probabilities=(0.0, 1.0, 1.0))
    assert model.clicks([0, 0, 1, 2], np.random.default_rng(0)) == [2]
    assert model.clicks([0, 0], np.random.default_rng(0)) == []
    with pytest.raises(ValueError):
        make_click_model("dbn")


# --- data sets --------------------------------------------------------------------------------------


def write_beir(folder, *, documents: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str, int]]):
    """A BEIR-layout folder."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for doc_id, text in documents.items():
            handle.write(json.dumps({"_id": doc_id, "title": f"Doc {doc_id}", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for query_id, text in queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def test_beir_reader(tmp_path):
    documents = {str(i): f"text {i}" for i in range(6)}
    queries = {"q1": "one", "q2": "two", "q3": "three", "q4": "four", "q5": "unjudged"}
    qrels = [("q1", "0", 1), ("q1", "1", 2), ("q2", "2", 1), ("q3", "3", 1), ("q4", "4", 0), ("q4", "5", 1)]
    qrels.append(("q2", "missing-doc", 1))
    write_beir(tmp_path, documents=documents, queries=queries, qrels=qrels)
    data = load_beir(tmp_path, users=4, queries_per_user=1, related_per_user=2, seed=0)
    assert len(data.objects) == 6 and data.objects[0].text == "Doc 0. text 0"
    assert set(data.queries) == {"q1", "q2", "q3", "q4"}  # q5 has no judgment
    assert data.views == ("seen", "related")
    for user in data.users:
        trained = {q for q, _ in user.train}
        related = {q for q, _ in user.views["related"]}
        assert len(trained) == 1 and not trained & related  # nobody trains on a related query
        for q, relevance in user.views["seen"] + user.views["related"]:
            assert all(g >= 1 for g in relevance.values()) and "missing-doc" not in relevance
    # Every user draws from the same training half of the judged queries.
    pools = {q for user in data.users for q, _ in user.train}
    assert not pools & {q for user in data.users for q, _ in user.views["related"]}
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path / "nowhere")


def test_movielens_reader_splits_ratings_by_time():
    data = load_movielens(users=30, seed=0)
    assert len(data.users) == 30 and len(data.objects) == 1682
    assert data.views == ("seen", "reworded", "related", "held_out")
    for user in data.users:
        seen = dict(user.views["seen"])
        for qid, train_relevance in user.train:
            assert qid.startswith("g:") and data.queries[qid].endswith(" movies")
            assert set(train_relevance) <= set(seen[qid])  # full relevance includes the earlier ratings
        for qid, later in user.views["held_out"]:
            train_relevance = dict(user.train)[qid]
            assert later and not set(later) & set(train_relevance)  # later ratings never drove a click
            assert set(later) <= set(seen[qid])
        trained_genres = {g for qid, _ in user.train for g in qid[2:].split("+")}
        for qid, relevance in user.views["related"]:
            assert qid not in seen and relevance
            assert trained_genres & set(qid[2:].split("+"))
        for qid, _ in user.views["reworded"]:
            assert qid.split(":", 1)[1] in seen and data.queries[qid] != data.queries[qid.split(":", 1)[1]]


def test_user_halves_are_stable_and_balanced():
    halves = [user_half(f"ml-{n}") for n in range(1000)]
    assert halves == [user_half(f"ml-{n}") for n in range(1000)]
    assert 400 < sum(halves) < 600


def test_arms():
    names = [arm.name for arm in standard_arms(["studio"])]
    assert names == ["no_feedback", "studio"]  # the baseline is always run
    arms = {arm.name: arm for arm in standard_arms()}
    assert arms["oracle"].click_eta == 0.0 and not arms["no_feedback"].improve
    assert arms["embedding_studio"].overrides["IMPROVEMENT_LR"] == 0.1
    assert arms["embedding_studio"].overrides["IMPROVEMENT_MAX_DRIFT"] is None
    with pytest.raises(ValueError):
        standard_arms(["bogus"])


# --- report ----------------------------------------------------------------------------------------


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
    assert set(report["guards"]) == {"other_users_unchanged", "anonymous_unchanged", "drift_ok"}
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


# --- sweep selection -------------------------------------------------------------------------------


def _interval(mean: float, half: float = 0.01) -> dict:
    return {"mean": mean, "low": mean - half, "high": mean + half}


def _tuning(deltas: dict[str, dict[str, float]], es: dict[str, float]) -> dict:
    """A fake tuning result for one data set: per config, per view Δ NDCG@10 (and NDCG = 0.1 + Δ)."""
    arms = {"embedding_studio": {v: {"ndcg@10": {"mean": 0.1 + d}} for v, d in es.items()}}
    for name, per_view in deltas.items():
        arms[name] = {v: {"ndcg@10": {"mean": 0.1 + d}} for v, d in per_view.items()}
    return {
        "arms": arms,
        "deltas": {name: {v: _interval(d) for v, d in per_view.items()} for name, per_view in deltas.items()},
    }


def test_sweep_admits_only_settings_that_hold_on_every_view_and_data_set():
    from improvement.evaluation.sweep import admissible, score

    es = {"seen": 0.01, "related": -0.05}
    tuning = {
        "a": _tuning({"defaults": {"seen": 0.05, "related": 0.0}, "bold": {"seen": 0.09, "related": -0.02}}, es),
        "b": _tuning({"defaults": {"seen": 0.03, "related": 0.0}, "bold": {"seen": 0.06, "related": 0.0}}, es),
    }
    assert admissible(tuning, "defaults") == (True, [])
    ok, misses = admissible(tuning, "bold")  # best seen gain, but it costs the related view on data set a
    assert not ok and misses == ["a related Δ -0.0200"]
    assert score(tuning, "bold") > score(tuning, "defaults")
    tuning["b"]["deltas"]["defaults"]["seen"] = _interval(0.005)  # interval reaches below 0
    assert admissible(tuning, "defaults")[1] == ["b seen Δ low -0.0050 ≤ 0"]


def test_sweep_keeps_the_defaults_unless_a_change_clearly_beats_them():
    from improvement.evaluation.sweep import MIN_GAIN, choose

    table = [
        {"config": "defaults", "admissible": True, "score": 0.150},
        {"config": "noise", "admissible": True, "score": 0.150 + MIN_GAIN / 2},
        {"config": "harmful", "admissible": False, "score": 0.300},
    ]
    assert choose(table)["config"] == "defaults"
    table.append({"config": "better", "admissible": True, "score": 0.150 + 2 * MIN_GAIN})
    assert choose(table)["config"] == "better"
    table[0]["admissible"] = False
    table.pop()
    assert choose(table)["config"] == "noise"  # defaults miss a target: the best admissible change

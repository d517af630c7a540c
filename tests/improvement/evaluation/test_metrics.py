"""improvement.evaluation.metrics: NDCG, MRR and recall by hand, and the bootstrap interval. No database."""

from __future__ import annotations

import math

import numpy as np
import pytest

from improvement.evaluation import metrics


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

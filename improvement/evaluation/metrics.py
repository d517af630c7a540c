"""Ranking metrics (NDCG@k, MRR@k, Recall@k) and bootstrap intervals over users."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
SCORING_DEPTH = 100


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain of grades in ranked order, with exponential gain ``2^g − 1``."""
    return sum((2.0**g - 1.0) / math.log2(position + 2) for position, g in enumerate(gains))


def ndcg_at(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """NDCG@k of ``ranking`` (object ids, best first) against graded ``relevance`` (missing = 0)."""
    ideal = dcg(sorted((g for g in relevance.values() if g > 0), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    return dcg([relevance.get(object_id, 0) for object_id in ranking[:k]]) / ideal


def mrr_at(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant (grade ≥ 1) object within the top k; 0 if none."""
    for position, object_id in enumerate(ranking[:k]):
        if relevance.get(object_id, 0) > 0:
            return 1.0 / (position + 1)
    return 0.0


def recall_at(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Share of the relevant (grade ≥ 1) objects found in the top k; 0 when nothing is relevant."""
    relevant = {object_id for object_id, g in relevance.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def score_ranking(ranking: Sequence[str], relevance: Mapping[str, int]) -> dict[str, float]:
    """All report metrics of one ranked list."""
    return {
        "ndcg@10": ndcg_at(ranking, relevance, 10),
        "mrr@10": mrr_at(ranking, relevance, 10),
        "recall@10": recall_at(ranking, relevance, 10),
        "recall@100": recall_at(ranking, relevance, 100),
    }


def mean_scores(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Metric-wise mean of several score dicts (a user's queries); NaN when there are none."""
    if not scores:
        return {metric: float("nan") for metric in METRICS}
    return {metric: float(np.mean([s[metric] for s in scores])) for metric in METRICS}


def bootstrap_interval(
    values: Sequence[float], *, samples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of ``values`` (one per user) with a percentile bootstrap interval, resampling users.

    Paired differences are bootstrapped by passing the per-user differences. A fixed ``seed``
    makes the interval reproducible; the same seed resamples the same users for every arm.
    """
    data = np.asarray(values, dtype=np.float64)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(samples, data.size))
    means = data[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    return {
        "mean": float(data.mean()),
        "low": float(np.percentile(means, tail)),
        "high": float(np.percentile(means, 100.0 - tail)),
    }

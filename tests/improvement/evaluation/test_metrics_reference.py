"""The evaluation's metrics agree with a reference implementation: ``ir-measures`` (trec_eval's measures through
pytrec_eval), on random rankings with graded relevance. Our NDCG uses the exponential gain 2^g − 1, which
ir-measures expresses as the gain map {1: 1, 2: 3}."""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, R, nDCG

from improvement.evaluation.metrics import score_ranking

REFERENCE = {
    "ndcg@10": nDCG(gains={0: 0, 1: 1, 2: 3}) @ 10,
    "mrr@10": RR @ 10,
    "recall@10": R @ 10,
    "recall@100": R @ 100,
}


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_ir_measures(seed):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels, run, ours = [], [], {}
    for q in range(20):
        qid = f"q{q}"
        relevant = rng.choice(docs, size=int(rng.integers(1, 25)), replace=False)
        relevance = {str(d): int(rng.integers(1, 3)) for d in relevant}
        ranking = [str(d) for d in rng.permutation(docs)[:120]]
        qrels += [ir_measures.Qrel(qid, d, g) for d, g in relevance.items()]
        run += [ir_measures.ScoredDoc(qid, d, float(len(ranking) - i)) for i, d in enumerate(ranking)]
        ours[qid] = score_ranking(ranking, relevance)
    reference = {}
    for metric in ir_measures.iter_calc(list(REFERENCE.values()), qrels, run):
        reference[(metric.query_id, metric.measure)] = metric.value
    for qid, scores in ours.items():
        for name, measure in REFERENCE.items():
            assert scores[name] == pytest.approx(reference[(qid, measure)], abs=1e-9), (qid, name)

"""improvement.learning.batch.similarities: an object's similarity to a session's query is its best part's, chunk
by chunk exactly as in one piece."""

from __future__ import annotations

import numpy as np
import pytest

from improvement.learning.batch import similarities


def _reference(queries, pair_session, pair_key, key_vectors, metric):
    """The same quantity, one pair at a time."""
    out = []
    for session, key in zip(pair_session, pair_key, strict=True):
        q, parts = queries[session], key_vectors[key]
        if metric == "cosine":
            scores = parts @ q / (np.linalg.norm(parts, axis=1) * np.linalg.norm(q))
        elif metric == "dot":
            scores = parts @ q
        else:
            scores = -np.linalg.norm(parts - q, axis=1)
        out.append(scores.max())
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclid"])
def test_similarities_take_the_best_part_whatever_the_chunk(metric):
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    key_vectors = [rng.normal(size=(int(rng.integers(1, 4)), 16)).astype(np.float32) for _ in range(11)]
    pair_session = np.repeat(np.arange(7), 5)
    pair_key = rng.integers(0, 11, len(pair_session))
    expected = _reference(queries, pair_session, pair_key, key_vectors, metric)
    for chunk in (3, 4096):  # rows of several parts split across chunk boundaries, and all in one chunk
        got = similarities(
            queries=queries,
            pair_session=pair_session,
            pair_key=pair_key,
            key_vectors=key_vectors,
            metric=metric,
            chunk=chunk,
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

"""improvement.evaluation.clicks: the position-based and cascade click models."""

from __future__ import annotations

import numpy as np
import pytest

from improvement.evaluation.clicks import CascadeModel, PositionBasedModel, make_click_model


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

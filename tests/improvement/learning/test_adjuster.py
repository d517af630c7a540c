"""improvement.learning.adjuster on tiny tensors whose answer is worked out by hand, plus a Hypothesis property test.

Hand computation relies on one fact about Adam: on its first step every coordinate moves by exactly
``lr · sign(gradient)`` (the bias-corrected m̂ / √v̂ is g / |g|), and not at all where the gradient is 0.
No database is needed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from improvement.learning.adjuster import adjust
from improvement.learning.params import AdjusterParams, ObjectVectors, SessionExample

LR = 0.01
# One plain AdamW step, no weight decay, no rails: the cleanest thing to compute by hand.
ONE_STEP = AdjusterParams(lr=LR, iterations=1, weight_decay=0.0, max_drift=None, renormalize=False)
Q = [0.6, 0.8]  # a unit query


def vec(*rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def obj(*rows) -> ObjectVectors:
    array = vec(*rows)
    return ObjectVectors(start=array, original=array.copy())


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --- gradient signs, per metric --------------------------------------------------------------------

# Object (1, 0), query (0.6, 0.8), clicked; L = -S³, so dL/dv = -3 S² dS/dv:
#   cosine: dS/dv = q̂/‖v‖ - S v/‖v‖² = (0.6, 0.8) - 0.6 (1, 0) = (0, 0.8)      → v moves by (0, +lr)
#   dot:    dS/dv = q = (0.6, 0.8)                                              → (+lr, +lr)
#   euclid: S = -‖q - v‖, dS/dv = (q - v)/‖q - v‖ ∝ (-0.4, 0.8); S³ < 0, so
#           dL/dv = -3 S² dS/dv ∝ (0.4, -0.8)                                  → (-lr, +lr)
CLICK_STEP = {"cosine": (0.0, LR), "dot": (LR, LR), "euclid": (-LR, LR)}


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclid"])
def test_clicked_object_moves_toward_the_query(metric):
    result = adjust(
        objects=[obj([1.0, 0.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[0])],
        params=ONE_STEP.with_(metric=metric),
        dim=2,
    )
    expected = np.array([[1.0, 0.0]]) + np.array([CLICK_STEP[metric]])
    np.testing.assert_allclose(result.vectors[0], expected, atol=1e-6)
    assert result.changed == [True]
    assert result.metrics["clicked_similarity_change"] > 0
    assert result.metrics["loss_after"] < result.metrics["loss_before"]


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclid"])
def test_negative_object_moves_away_from_the_query(metric):
    # A clicked object 1 keeps the session valid; object 0 is pushed: L = +S³, every sign flips.
    result = adjust(
        objects=[obj([1.0, 0.0]), obj([0.0, 1.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[1], negatives=[0])],
        params=ONE_STEP.with_(metric=metric),
        dim=2,
    )
    expected = np.array([[1.0, 0.0]]) - np.array([CLICK_STEP[metric]])
    np.testing.assert_allclose(result.vectors[0], expected, atol=1e-6)
    assert result.metrics["negative_similarity_change"] < 0
    assert result.metrics["clicked_similarity_change"] > 0


def test_every_metric_value_for_one_click_and_one_negative():
    clicked, pushed = [1.0, 0.0], [0.0, 1.0]
    result = adjust(
        objects=[obj(clicked), obj(pushed)],
        sessions=[SessionExample(query=vec(*Q), clicked=[0], negatives=[1])],
        params=ONE_STEP,
        dim=2,
    )
    # cosine: clicked (1,0) → (1, lr) as above; pushed (0,1): dS/dv = (0.6, 0.8) - 0.8 (0, 1) = (0.6, 0),
    # L = +S³ → gradient (+, 0) → (-lr, 1).
    clicked_after, pushed_after = [1.0, LR], [-LR, 1.0]
    np.testing.assert_allclose(result.vectors[0], [clicked_after], atol=1e-6)
    np.testing.assert_allclose(result.vectors[1], [pushed_after], atol=1e-6)
    s_c0, s_n0 = 0.6, 0.8
    s_c1, s_n1 = cosine(Q, clicked_after), cosine(Q, pushed_after)
    drifts = sorted([1 - cosine(clicked, clicked_after), 1 - cosine(pushed, pushed_after)])
    expected = {
        "loss_before": -(s_c0**3) + s_n0**3,
        "loss_after": -(s_c1**3) + s_n1**3,
        "clicked_similarity_before": s_c0,
        "clicked_similarity_after": s_c1,
        "clicked_similarity_change": s_c1 - s_c0,
        "negative_similarity_before": s_n0,
        "negative_similarity_after": s_n1,
        "negative_similarity_change": s_n1 - s_n0,
        "drift_p50": float(np.percentile(drifts, 50)),
        "drift_p90": float(np.percentile(drifts, 90)),
        "drift_max": drifts[-1],
    }
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=2e-6), name
    assert result.metrics["sessions"] == 1
    assert result.metrics["objects"] == 2
    assert result.metrics["objects_changed"] == 2
    assert result.metrics["clicked_pairs"] == 1
    assert result.metrics["negative_pairs"] == 1
    assert result.failed_sessions == {}
    import json

    json.dumps(result.metrics)  # JSON-serialisable as is


def test_session_without_negatives_has_no_negative_term():
    result = adjust(
        objects=[obj([1.0, 0.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[0], negatives=[])],
        params=ONE_STEP,
        dim=2,
    )
    assert result.metrics["loss_before"] == pytest.approx(-(0.6**3), abs=1e-6)
    assert result.metrics["negative_pairs"] == 0
    assert result.metrics["negative_similarity_change"] == 0.0


# --- shared parameters and batching ------------------------------------------------------------------


def test_two_sessions_on_one_object_add_their_gradients():
    # dot metric, object (1, 0). Session A clicks it for q_A = (0.6, 0.8); session B pushes it for
    # q_B = (0.8, 0.6). Batch loss = (-(q_A·v)³ + (q_B·v)³) / 2, gradient
    #   -3·0.6²·q_A/2 + 3·0.8²·q_B/2 = (-0.324, -0.432) + (0.768, 0.576) = (0.444, 0.144) → v - lr·(1, 1).
    # Each session alone would move the object differently ((+lr, +lr) and (-lr, -lr)).
    q_a, q_b = vec(0.6, 0.8), vec(0.8, 0.6)
    shared = obj([1.0, 0.0])
    helper = obj([0.0, 1.0])  # B needs a click to be a session
    result = adjust(
        objects=[shared, helper],
        sessions=[
            SessionExample(query=q_a, clicked=[0]),
            SessionExample(query=q_b, clicked=[1], negatives=[0]),
        ],
        params=ONE_STEP.with_(metric="dot"),
        dim=2,
    )
    np.testing.assert_allclose(result.vectors[0], [[1.0 - LR, -LR]], atol=1e-6)
    # loss: mean over sessions; B also has its clicked term -(q_B·helper)³ = -0.6³.
    expected_loss = (-(0.6**3) + (-(0.6**3) + 0.8**3)) / 2
    assert result.metrics["loss_before"] == pytest.approx(expected_loss, abs=1e-6)


def test_gradients_that_cancel_leave_the_shared_object_unchanged():
    # Cosine, object (1, 0) clicked for (0.6, 0.8) and for (0.6, -0.8): the y-gradients cancel exactly.
    result = adjust(
        objects=[obj([1.0, 0.0])],
        sessions=[
            SessionExample(query=vec(0.6, 0.8), clicked=[0]),
            SessionExample(query=vec(0.6, -0.8), clicked=[0]),
        ],
        params=ONE_STEP,
        dim=2,
    )
    np.testing.assert_allclose(result.vectors[0], [[1.0, 0.0]], atol=1e-7)
    assert result.changed == [False]


def test_padding_is_untouched_and_ragged_batches_match_separate_runs():
    # Object 0 has one part, object 1 three parts, object 2 is in the batch but in no session.
    # Session 0 has one click; session 1 one click and three negatives (ragged slots and parts).
    d = 3
    rng = np.random.default_rng(7)
    single = ObjectVectors(start=vec([1.0, 0.0, 0.0]), original=vec([1.0, 0.0, 0.0]))
    three = rng.normal(size=(3, d)).astype(np.float32)
    others = [obj(*rng.normal(size=(1, d)).astype(np.float32).tolist()) for _ in range(3)]
    untouched = obj([0.0, 0.0, 2.0])
    q0 = vec(0.6, 0.48, 0.64)  # unit; cosine 0.6 with object 0
    q1 = (rng.normal(size=d)).astype(np.float32)
    objects = [single, ObjectVectors(start=three, original=three.copy()), untouched, *others]
    sessions = [
        SessionExample(query=q0, clicked=[0]),
        SessionExample(query=q1, clicked=[1], negatives=[3, 4, 5]),
    ]
    params = ONE_STEP.with_(iterations=3)
    result = adjust(objects=objects, sessions=sessions, params=params, dim=d)

    assert [v.shape for v in result.vectors] == [(1, d), (3, d), (1, d), (1, d), (1, d), (1, d)]
    assert all(v.dtype == np.float32 for v in result.vectors)
    np.testing.assert_array_equal(result.vectors[2], untouched.start)
    assert result.changed[2] is False
    assert all(result.changed[i] for i in (0, 1, 3, 4, 5))

    # Each object is its own parameter and Adam is per coordinate, so object 0 (sharing no session
    # with the 3-part object) ends where it ends when trained alone: padding added nothing to it.
    alone = adjust(objects=[single], sessions=[sessions[0]], params=params, dim=d)
    np.testing.assert_allclose(result.vectors[0], alone.vectors[0], atol=1e-6)
    # By hand, first step: dS/dv = q̂ - S·v = (0, 0.48, 0.64) for v = (1, 0, 0): x stays, y and z grow.
    first_step = adjust(objects=objects, sessions=sessions, params=ONE_STEP, dim=d)
    np.testing.assert_allclose(first_step.vectors[0], [[1.0, LR, LR]], atol=1e-6)


# --- multi-part objects ----------------------------------------------------------------------------


def test_softmin_weights_favour_the_best_part():
    # Parts (1, 0) and (0, 1): cosine 0.6 and 0.8 with q = (0.6, 0.8). T = 0.05 gives the better
    # part the weight 1 / (1 + e^-4) ≈ 0.982, so S ≈ 0.796: close to the best part, not the mean 0.7.
    params = ONE_STEP.with_(softmin_temperature=0.05)
    result = adjust(
        objects=[obj([1.0, 0.0], [0.0, 1.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[0])],
        params=params,
        dim=2,
    )
    w_best = 1.0 / (1.0 + math.exp(-(0.8 - 0.6) / 0.05))
    expected_s = w_best * 0.8 + (1 - w_best) * 0.6
    assert result.metrics["clicked_similarity_before"] == pytest.approx(expected_s, abs=1e-6)
    assert result.metrics["loss_before"] == pytest.approx(-(expected_s**3), abs=1e-6)
    assert expected_s > 0.79
    # A high temperature approaches the plain mean of the parts.
    warm = adjust(
        objects=[obj([1.0, 0.0], [0.0, 1.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[0])],
        params=params.with_(softmin_temperature=100.0),
        dim=2,
    )
    assert warm.metrics["clicked_similarity_before"] == pytest.approx(0.7, abs=1e-3)


# --- safety rails ----------------------------------------------------------------------------------


def test_drift_cap_holds_and_is_active():
    rng = np.random.default_rng(3)
    d = 8
    objects = [obj(*rng.normal(size=(2, d)).tolist()) for _ in range(6)]
    sessions = [
        SessionExample(query=rng.normal(size=d).astype(np.float32), clicked=[i], negatives=[(i + 1) % 6])
        for i in range(6)
    ]
    loose = AdjusterParams.embedding_studio()  # lr 0.1, 10 iterations, no rails
    capped = loose.with_(max_drift=0.05)

    def worst_drift(result):
        return max(
            1 - cosine(new[p], o.original[p])
            for new, o in zip(result.vectors, objects, strict=True)
            for p in range(o.original.shape[0])
        )

    assert worst_drift(adjust(objects=objects, sessions=sessions, params=loose, dim=d)) > 0.05
    result = adjust(objects=objects, sessions=sessions, params=capped, dim=d)
    assert worst_drift(result) <= 0.05 + 1e-6
    assert result.metrics["drift_max"] <= 0.05 + 1e-6
    assert result.metrics["drift_max"] == pytest.approx(0.05, abs=1e-4)  # the cap is what stopped it


def test_drift_cap_keeps_the_length():
    # Cap without renormalization: the vector is rotated back, its length is whatever the step made it.
    result = adjust(
        objects=[obj([1.0, 0.0])],
        sessions=[SessionExample(query=vec(0.0, 1.0), clicked=[0])],
        params=AdjusterParams(lr=0.5, iterations=1, weight_decay=0.0, max_drift=0.01, renormalize=False, metric="dot"),
        dim=2,
    )
    # dot: gradient -3·0²·q = 0 → nothing moves (S = 0). Use a tilted query instead below.
    assert result.changed == [False]
    result = adjust(
        objects=[obj([1.0, 0.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[0])],
        params=AdjusterParams(lr=0.5, iterations=1, weight_decay=0.0, max_drift=0.01, renormalize=False, metric="dot"),
        dim=2,
    )
    # The step makes (1.5, 0.5) (length √2.5); the cap rotates it to cosine 0.99 with (1, 0).
    new = result.vectors[0][0]
    assert np.linalg.norm(new) == pytest.approx(math.sqrt(2.5), abs=1e-5)
    assert cosine(new, [1.0, 0.0]) == pytest.approx(0.99, abs=1e-6)
    assert new[1] > 0  # rotated back toward the original on the same side


def test_renormalization_keeps_each_parts_norm():
    rng = np.random.default_rng(5)
    d = 6
    starts = [rng.normal(size=(2, d)).astype(np.float32) * scale for scale in (0.5, 3.0, 1.0)]
    objects = [ObjectVectors(start=s, original=s.copy()) for s in starts]
    sessions = [SessionExample(query=rng.normal(size=d).astype(np.float32), clicked=[0, 1], negatives=[2])]
    result = adjust(
        objects=objects,
        sessions=sessions,
        params=AdjusterParams.embedding_studio(renormalize=True),
        dim=d,
    )
    assert all(result.changed)
    for new, start in zip(result.vectors, starts, strict=True):
        np.testing.assert_allclose(np.linalg.norm(new, axis=1), np.linalg.norm(start, axis=1), rtol=1e-5)


# --- weights ---------------------------------------------------------------------------------------


def test_event_weights_and_position_bias_scale_the_terms():
    base = {"objects": [obj([1.0, 0.0]), obj([0.0, 1.0])], "dim": 2}
    weighted = adjust(
        sessions=[SessionExample(query=vec(*Q), clicked=[0], clicked_weights=[2.0])], params=ONE_STEP, **base
    )
    assert weighted.metrics["loss_before"] == pytest.approx(-2 * 0.6**3, abs=1e-6)

    # η = 1: the click at position 2 weighs 3, the negative at position 0 weighs 1.
    session = SessionExample(query=vec(*Q), clicked=[0], negatives=[1], clicked_positions=[2], negative_positions=[0])
    biased = adjust(sessions=[session], params=ONE_STEP.with_(position_bias_eta=1.0), **base)
    assert biased.metrics["loss_before"] == pytest.approx(-3 * 0.6**3 + 0.8**3, abs=1e-6)
    plain = adjust(sessions=[session], params=ONE_STEP, **base)  # η = 0: positions ignored
    assert plain.metrics["loss_before"] == pytest.approx(-(0.6**3) + 0.8**3, abs=1e-6)


# --- changed flags, failures, validation ------------------------------------------------------------


def test_changed_flags():
    # Object 0 clicked with an orthogonal query: S = 0, gradient 3·S² = 0, so it does not move.
    # Object 1 clicked normally moves; object 2 is in no session.
    result = adjust(
        objects=[obj([1.0, 0.0]), obj([1.0, 0.0]), obj([0.0, 1.0])],
        sessions=[
            SessionExample(query=vec(0.0, 1.0), clicked=[0]),
            SessionExample(query=vec(*Q), clicked=[1]),
        ],
        params=ONE_STEP,
        dim=2,
    )
    assert result.changed == [False, True, False]
    np.testing.assert_array_equal(result.vectors[0], vec([1.0, 0.0]))
    assert result.metrics["objects_changed"] == 1


def test_weight_decay_alone_changes_a_touched_object_but_not_an_untouched_one():
    result = adjust(
        objects=[obj([1.0, 0.0]), obj([0.0, 1.0])],
        sessions=[SessionExample(query=vec(0.0, 1.0), clicked=[0])],  # S = 0: no gradient at all
        params=ONE_STEP.with_(weight_decay=0.5),
        dim=2,
    )
    np.testing.assert_allclose(result.vectors[0], [[1.0 - LR * 0.5, 0.0]], atol=1e-7)
    assert result.changed == [True, False]


def test_bad_sessions_fail_alone():
    objects = [obj([1.0, 0.0]), obj([0.0, 1.0]), ObjectVectors(start=vec([np.nan, 0.0]), original=vec([1.0, 0.0]))]
    sessions = [
        SessionExample(query=vec(np.nan, 1.0), clicked=[0]),
        SessionExample(query=vec(*Q), clicked=[1]),
        SessionExample(query=vec(*Q), clicked=[2]),
    ]
    result = adjust(objects=objects, sessions=sessions, params=ONE_STEP, dim=2)
    assert set(result.failed_sessions) == {0, 2}
    assert result.changed == [False, True, False]
    np.testing.assert_array_equal(result.vectors[0], vec([1.0, 0.0]))
    assert result.metrics["sessions_failed"] == 2


def test_an_extreme_learning_rate_fails_the_sessions_instead_of_writing_nan():
    # dot with lr 1e30: S³ overflows to inf, Adam's inf/inf gives NaN.
    result = adjust(
        objects=[obj([1.0, 0.0]), obj([0.0, 1.0])],
        sessions=[SessionExample(query=vec(*Q), clicked=[0])],
        params=AdjusterParams(metric="dot", lr=1e30, iterations=3, max_drift=None, renormalize=False),
        dim=2,
    )
    assert list(result.failed_sessions) == [0]
    assert "non-finite" in result.failed_sessions[0]
    assert result.changed == [False, False]
    assert all(np.isfinite(v).all() for v in result.vectors)


def test_structural_errors_raise():
    with pytest.raises(ValueError, match="outside"):
        adjust(objects=[obj([1.0, 0.0])], sessions=[SessionExample(query=vec(*Q), clicked=[3])], params=ONE_STEP)
    with pytest.raises(ValueError, match="dimension"):
        adjust(objects=[obj([1.0, 0.0])], sessions=[SessionExample(query=vec(*Q), clicked=[0])], params=ONE_STEP, dim=3)
    with pytest.raises(ValueError, match="shape"):
        adjust(
            objects=[ObjectVectors(start=vec([1.0, 0.0]), original=vec([1.0, 0.0], [0.0, 1.0]))],
            sessions=[],
            params=ONE_STEP,
        )
    with pytest.raises(ValueError, match="metric"):
        AdjusterParams(metric="manhattan")


def test_empty_batch():
    result = adjust(objects=[obj([1.0, 0.0])], sessions=[], params=ONE_STEP, dim=2)
    assert result.changed == [False]
    assert result.metrics["sessions"] == 0
    assert result.metrics["loss_before"] == 0.0


# --- property test ---------------------------------------------------------------------------------


@st.composite
def batches(draw):
    dim = draw(st.integers(2, 5))
    n_objects = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def random_vectors(n):
        v = rng.normal(size=(n, dim))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return (v * rng.uniform(0.5, 2.0, size=(n, 1))).astype(np.float32)

    objects = []
    for _ in range(n_objects):
        parts = draw(st.integers(1, 3))
        start = random_vectors(parts)
        objects.append(ObjectVectors(start=start, original=start.copy()))
    sessions = []
    for _ in range(draw(st.integers(1, 5))):
        indices = draw(st.lists(st.integers(0, n_objects - 1), min_size=1, max_size=6, unique=True))
        n_clicked = draw(st.integers(1, len(indices)))
        clicked, negatives = indices[:n_clicked], indices[n_clicked:]
        sessions.append(
            SessionExample(
                query=random_vectors(1)[0],
                clicked=clicked,
                negatives=negatives,
                clicked_weights=[draw(st.sampled_from([0.5, 1.0, 2.0])) for _ in clicked],
                clicked_positions=list(range(len(clicked))),
                negative_positions=list(range(len(clicked), len(indices))),
            )
        )
    return dim, objects, sessions


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=batches(),
    metric=st.sampled_from(["cosine", "dot", "euclid"]),
    iterations=st.integers(1, 4),
    eta=st.sampled_from([0.0, 1.0]),
    temperature=st.sampled_from([0.05, 1.0]),
)
def test_property_finite_descending_deterministic(batch, metric, iterations, eta, temperature):
    dim, objects, sessions = batch
    params = AdjusterParams(
        metric=metric,
        lr=1e-4,
        weight_decay=0.0,
        iterations=iterations,
        softmin_temperature=temperature,
        position_bias_eta=eta,
        max_drift=None,
        renormalize=False,
    )
    first = adjust(objects=objects, sessions=sessions, params=params, dim=dim)
    second = adjust(objects=objects, sessions=sessions, params=params, dim=dim)

    assert first.failed_sessions == {}
    assert [v.shape for v in first.vectors] == [o.start.shape for o in objects]
    assert all(np.isfinite(v).all() for v in first.vectors)
    assert all(np.isfinite(x) for x in first.metrics.values() if isinstance(x, float))
    assert first.metrics["loss_after"] <= first.metrics["loss_before"] + 1e-6
    for a, b in zip(first.vectors, second.vectors, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.changed == second.changed
    touched = {o for s in sessions for o in (*s.clicked, *s.negatives)}
    assert not any(first.changed[i] for i in range(len(objects)) if i not in touched)


@settings(max_examples=40, deadline=None)
@given(batch=batches(), metric=st.sampled_from(["cosine", "dot", "euclid"]))
def test_property_rails_hold_with_a_large_learning_rate(batch, metric):
    dim, objects, sessions = batch
    params = AdjusterParams.embedding_studio(metric=metric, max_drift=0.05, renormalize=True)
    result = adjust(objects=objects, sessions=sessions, params=params, dim=dim)
    for new, o in zip(result.vectors, objects, strict=True):
        assert np.isfinite(new).all()
        for p in range(o.original.shape[0]):
            assert 1 - cosine(new[p], o.original[p]) <= 0.05 + 1e-5
            if metric == "cosine":
                assert np.linalg.norm(new[p]) == pytest.approx(np.linalg.norm(o.original[p]), rel=1e-5)


# --- the hand-written backward against autograd's numerical check -------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclid"])
@pytest.mark.parametrize("padded", [False, True])
def test_hand_written_gradient_matches_finite_differences(metric, padded):
    import torch

    from improvement.learning.adjuster import _loss, _Terms

    rng = np.random.default_rng(11)
    n, parts, d = 4, 2, 3
    vectors = torch.tensor(rng.normal(size=(n, parts, d)), dtype=torch.float64)
    mask = torch.ones(n, parts, dtype=torch.bool)
    if padded:
        mask[1, 1] = mask[3, 1] = False
        vectors[~mask] = 0.0
    vectors.requires_grad_(True)

    def terms(object_index, count):
        query = torch.tensor(rng.normal(size=(count, 1, d)), dtype=torch.float64)
        if metric == "cosine":
            query = query / query.norm(dim=-1, keepdim=True)
        return _Terms(
            object_index=object_index,
            query=query,
            query_sq_norm=(query[:, 0] * query[:, 0]).sum(dim=-1, keepdim=True),
            coefficient=torch.tensor(rng.normal(size=count), dtype=torch.float64),
            clicked=torch.ones(count, dtype=torch.bool),
            session_row=np.zeros(count, dtype=np.int64),
        )

    # First group: one term per object (row i = object i); second: repeated objects 0, 2, 0.
    groups = [terms(None, n), terms(torch.tensor([0, 2, 0]), 3)]
    params = AdjusterParams(metric=metric, softmin_temperature=0.5)
    torch.autograd.gradcheck(
        lambda v: _loss(v, groups, mask if padded else None, params)[0], (vectors,), eps=1e-6, atol=1e-6
    )
    if padded:  # padded parts receive exactly zero gradient
        vectors.grad = None
        _loss(vectors, groups, mask, params)[0].backward()
        assert torch.all(vectors.grad[~mask] == 0)


def test_deterministic_on_a_batch_with_many_shared_objects():
    # Repeated objects go through index_add_ in the backward; two calls must agree bit for bit.
    rng = np.random.default_rng(2)
    d, n_objects = 32, 40
    objects = [obj(*rng.normal(size=(1 + i % 2, d)).tolist()) for i in range(n_objects)]
    sessions = []
    for _ in range(300):
        shown = rng.choice(n_objects, size=6, replace=False).tolist()
        sessions.append(
            SessionExample(query=rng.normal(size=d).astype(np.float32), clicked=shown[:1], negatives=shown[1:])
        )
    params = AdjusterParams(lr=0.01)
    first = adjust(objects=objects, sessions=sessions, params=params, dim=d)
    second = adjust(objects=objects, sessions=sessions, params=params, dim=d)
    assert all(first.changed)
    for a, b in zip(first.vectors, second.vectors, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.metrics["loss_after"] == second.metrics["loss_after"]

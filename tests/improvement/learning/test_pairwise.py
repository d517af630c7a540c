"""improvement.learning.pairwise: the v2 rule — preferences, steps that follow the gradient, per-user
normalization, norm rails under dot and euclid (no database: the engine on its own)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from improvement.learning.adjuster import adjust
from improvement.learning.pairwise import session_pairs
from improvement.learning.params import AdjusterParams, ObjectVectors, SessionExample

D = 32
PAIRWISE = AdjusterParams(rule="pairwise", lr=0.3, iterations=10, max_drift=0.05, max_norm_ratio=1.25)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def page(rng, query: np.ndarray, n: int = 10) -> list[ObjectVectors]:
    """``n`` objects near ``query``, best first (as a search would have shown them)."""
    vectors = unit(query[None, :] * 0.6 + rng.normal(size=(n, D)) * 0.08)
    vectors = vectors[np.argsort(-(vectors @ query))]
    return [ObjectVectors(start=v[None, :].copy(), original=v[None, :].copy()) for v in vectors]


def click_at(position: int, *, offset: int = 0, user: str | None = "u", weight: float = 1.0, query=None):
    """A session that clicked the object shown at ``position`` of a page of ten (objects ``offset``…)."""
    return SessionExample(
        query=query,
        clicked=[offset + position],
        negatives=[offset + p for p in range(10) if p != position],
        clicked_positions=[position],
        negative_positions=[p for p in range(10) if p != position],
        clicked_weights=[weight],
        user=user,
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def test_pairs_are_each_click_over_the_skipped_results_above_it():
    session = SessionExample(
        query=np.ones(D, np.float32),
        clicked=[2, 5],
        negatives=[0, 1, 3, 4],
        clicked_positions=[2, 5],
        negative_positions=[0, 1, 3, 4],
        clicked_weights=[1.0, 2.0],
    )
    assert session_pairs(session, eta=0.0) == [
        (2, 0, 0.5, True),
        (2, 1, 0.5, True),
        (5, 0, 0.5, True),
        (5, 1, 0.5, True),
        (5, 3, 0.5, True),
        (5, 4, 0.5, True),
    ]
    # η = 1: the click at position 2 weighs (2 + 1)^1
    assert session_pairs(session, eta=1.0)[:2] == [(2, 0, 1.5, True), (2, 1, 1.5, True)]
    top = SessionExample(query=session.query, clicked=[0], negatives=[1], clicked_positions=[0], negative_positions=[1])
    assert session_pairs(top, eta=0.0) == []  # a click on the first result says nothing to fix


def test_skip_next_adds_a_weak_pair_over_the_unclicked_result_right_below_each_click():
    session = SessionExample(
        query=np.ones(D, np.float32),
        clicked=[0, 3],
        negatives=[1, 2],
        clicked_positions=[0, 3],
        negative_positions=[1, 2],
        clicked_weights=[1.0, 2.0],
        next_skipped=[1, None],  # below the first click: object 1; below the last: nothing shown
    )
    assert session_pairs(session, eta=0.0, next_weight=0.0) == [(3, 1, 1.0, True), (3, 2, 1.0, True)]  # off
    # on: a pair that lifts the first-result click over object 1 and does not push object 1
    on = session_pairs(session, eta=0.0, next_weight=0.25)
    assert on == [(0, 1, 0.25, False), (3, 1, 1.0, True), (3, 2, 1.0, True)]
    # η = 1 scales the skip-next pair like the click's other pairs: (3 + 1)^1 · 2 · 0.25
    below_last = dataclasses.replace(session, next_skipped=[None, 4])
    assert session_pairs(below_last, eta=1.0, next_weight=0.25)[-1] == (3, 4, 2.0, False)


def test_push_depth_keeps_every_pair_and_pushes_only_the_results_close_above_the_click():
    session = click_at(4, query=np.ones(D, np.float32))
    every = session_pairs(session, eta=0.0)
    near = session_pairs(session, eta=0.0, push_depth=1)
    assert [p[:3] for p in near] == [p[:3] for p in every]  # the same preferences, the same weights
    assert [p[3] for p in near] == [False, False, False, True]  # only position 3, right above the click, is pushed
    assert [p[3] for p in session_pairs(session, eta=0.0, push_depth=0)] == [False] * 4  # lift the click only

    rng = np.random.default_rng(5)
    query = unit(rng.normal(size=D))
    objects = page(rng, query)
    result = adjust(objects=objects, sessions=[click_at(6, query=query)], params=PAIRWISE.with_(pair_push_depth=2))
    before = [cosine(query, o.start) for o in objects]
    after = [cosine(query, v) for v in result.vectors]
    assert after[:4] == pytest.approx(before[:4], abs=1e-7)  # four and more places above: held still
    assert after[4] < before[4] and after[5] < before[5]  # the two right above the click: pushed down
    assert after[6] > max(after[:6])  # and the preference over every skipped result still holds
    assert result.changed == [False] * 4 + [True] * 3 + [False] * 3


def test_skip_next_lifts_a_first_result_click_and_moves_nothing_else():
    rng = np.random.default_rng(3)
    query = unit(rng.normal(size=D))
    objects = page(rng, query)
    session = SessionExample(
        query=query, clicked=[0], negatives=[], clicked_positions=[0], negative_positions=[], next_skipped=[1]
    )
    params = PAIRWISE.with_(pair_next_weight=0.5)
    result = adjust(objects=objects, sessions=[session], params=params)
    before = [cosine(query, o.start) for o in objects]
    after = [cosine(query, v) for v in result.vectors]
    assert after[0] > before[0]  # the clicked object came closer to the query
    assert after[1:] == pytest.approx(before[1:], abs=1e-7)  # the one below is not pushed: weak evidence
    assert result.changed == [True] + [False] * 9
    assert result.metrics["clicked_pairs"] == 1 and result.metrics["negative_pairs"] == 0  # nothing was pushed
    unused = adjust(objects=objects, sessions=[session], params=PAIRWISE)  # weight 0: a top click teaches nothing
    assert not any(unused.changed)


def test_a_click_lifts_its_object_past_the_ones_above_and_pushes_them_only_a_little():
    rng = np.random.default_rng(0)
    query = unit(rng.normal(size=D))
    objects = page(rng, query)
    result = adjust(objects=objects, sessions=[click_at(6, query=query)], params=PAIRWISE)
    before = [cosine(query, o.start) for o in objects]
    after = [cosine(query, v) for v in result.vectors]
    assert after[6] > max(after[:6])  # the preference holds
    assert all(before[p] - after[p] < 0.5 * (after[6] - before[6]) for p in range(6))  # the others move less
    assert after[7:] == pytest.approx(before[7:])  # below the click: not examined, untouched
    assert max(1 - cosine(v, o.original) for v, o in zip(result.vectors, objects, strict=True)) <= 0.05 + 1e-5


def test_a_users_vectors_do_not_depend_on_who_else_is_in_the_batch():
    rng = np.random.default_rng(1)
    query = unit(rng.normal(size=D))
    alice = page(rng, query)
    alone = adjust(objects=alice, sessions=[click_at(4, query=query, user="alice")], params=PAIRWISE)
    objects, sessions = list(alice), [click_at(4, query=query, user="alice")]
    for n in range(2000):
        other_query = unit(rng.normal(size=D))
        sessions.append(click_at(int(rng.integers(1, 10)), offset=len(objects), user=f"u{n}", query=other_query))
        objects += page(rng, other_query)
    crowded = adjust(objects=objects, sessions=sessions, params=PAIRWISE)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(alone.vectors, crowded.vectors[:10], strict=True))
    assert difference <= 1e-5


def test_a_users_many_sessions_are_normalized_by_their_count():
    rng = np.random.default_rng(2)
    query = unit(rng.normal(size=D))
    objects = page(rng, query)
    once = adjust(objects=objects, sessions=[click_at(5, query=query)], params=PAIRWISE)
    many = adjust(objects=objects, sessions=[click_at(5, query=query)] * 50, params=PAIRWISE)
    assert max(float(np.abs(a - b).max()) for a, b in zip(once.vectors, many.vectors, strict=True)) <= 1e-5


def test_event_weights_scale_the_step():
    rng = np.random.default_rng(3)
    query = unit(rng.normal(size=D))
    objects = page(rng, query)
    one_step = PAIRWISE.with_(lr=0.1, iterations=1)
    moved = {}
    for weight in (1.0, 3.0):
        result = adjust(objects=objects, sessions=[click_at(6, query=query, weight=weight)], params=one_step)
        moved[weight] = float(np.linalg.norm(result.vectors[6] - objects[6].start))
    assert moved[3.0] >= 2 * moved[1.0] > 0


@pytest.mark.parametrize("metric", ["dot", "euclid"])
def test_under_dot_and_euclid_copies_stay_within_the_norm_bound_and_never_become_hubs(metric):
    rng = np.random.default_rng(4)
    params = PAIRWISE.with_(metric=metric)
    catalogue = rng.normal(size=(2000, D)).astype(np.float32)
    query = rng.normal(size=D).astype(np.float32)
    order = np.argsort(-(catalogue @ query) if metric == "dot" else np.linalg.norm(catalogue - query, axis=1))
    shown = order[:10]
    copies = {int(i): catalogue[i][None, :].copy() for i in shown}
    for _run in range(100):  # one click at position 7 per run, each run starting from the last one's copies
        objects = [ObjectVectors(start=copies[int(i)], original=catalogue[i][None, :]) for i in shown]
        result = adjust(objects=objects, sessions=[click_at(7, query=query)], params=params)
        copies = {int(i): v for i, v in zip(shown, result.vectors, strict=True)}
    ratios = [float(np.linalg.norm(copies[int(i)]) / np.linalg.norm(catalogue[i])) for i in shown]
    assert max(ratios) <= 1.25 + 1e-4 and min(ratios) >= 1 / 1.25 - 1e-4
    clicked = copies[int(shown[7])][0]
    in_top10 = 0
    for _ in range(200):  # random unrelated queries: the clicked copy against the originals
        probe = rng.normal(size=D).astype(np.float32)
        if metric == "dot":
            scores, mine = catalogue @ probe, clicked @ probe
            rank = int((np.delete(scores, shown[7]) > mine).sum())
        else:
            distances, mine = np.linalg.norm(catalogue - probe, axis=1), np.linalg.norm(clicked - probe)
            rank = int((np.delete(distances, shown[7]) < mine).sum())
        in_top10 += rank < 10
    assert in_top10 / 200 <= 0.05, (metric, in_top10)


def test_the_seed_rule_is_still_selectable_and_unchanged():
    rng = np.random.default_rng(5)
    query = unit(rng.normal(size=D))
    objects = page(rng, query)
    seed = AdjusterParams.studio_v1()
    assert seed.rule == "seed"
    result = adjust(objects=objects, sessions=[click_at(6, query=query)], params=seed)
    # AdamW moves every touched vector by about lr·√D per step, whatever its weight (why v2 exists).
    moves = [float(np.linalg.norm(v - o.start)) for v, o in zip(result.vectors[:7], objects[:7], strict=True)]
    assert min(moves) > 0.5 * max(moves) > 0


@pytest.mark.parametrize("distinct_queries", [False, True])
@pytest.mark.parametrize("metric", ["cosine", "dot", "euclid"])
def test_the_written_out_gradient_of_one_part_objects_is_autograds(metric, distinct_queries):
    import torch

    from improvement.learning import pairwise

    rng = np.random.default_rng(3)
    terms, objects, pairs, sessions = 400, 90, 300, 40
    vectors = torch.from_numpy(rng.normal(size=(objects, 1, D)).astype(np.float32))
    session_query = torch.from_numpy(rng.normal(size=(sessions, D)).astype(np.float32))
    term_session = torch.from_numpy(rng.integers(0, sessions, terms))
    batch = pairwise._Terms(
        object_index=torch.from_numpy(rng.integers(0, objects, terms)),
        query=session_query[term_session],
        winner=torch.from_numpy(rng.integers(0, terms, pairs)),
        loser=torch.from_numpy(rng.integers(0, terms, pairs)),
        weight=torch.from_numpy(rng.random(pairs).astype(np.float32)),
        pushes=torch.from_numpy(rng.random(pairs) < 0.7),  # some skip-next pairs: their loser is held still
        # the gradient sums each object's queries over the sessions' distinct rows, or over every term's own
        session_query=session_query if distinct_queries else None,
        term_session=term_session if distinct_queries else None,
    )
    params = dataclasses.replace(PAIRWISE, metric=metric, pair_margin=0.05)
    written = pairwise._gradient(vectors, batch, None, params)
    again = pairwise._gradient(vectors, batch, None, params)  # the reused buffers give the same step
    tracked = vectors.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(pairwise._loss(tracked, batch, None, params)[0], tracked)
    assert float(expected.abs().max()) > 0.1  # a real gradient, not zeros on both sides
    assert torch.allclose(written, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(written, again)

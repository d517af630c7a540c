"""The shared tier through real runs: everyone's clicks on a query improve it for everyone, only once two
users taught it, one user's many sessions weigh as one, forgetting a user is exact, and weight 0 is off.
Also the fence: a copy is never written from an original that was re-upserted during the run."""

from __future__ import annotations

import numpy as np
import pytest

from improvement import services as improvement_services
from improvement.learning import adjuster
from improvement.models import RunTrigger
from studio.catalogue import services as catalogue_services
from studio.catalogue import shared
from studio.catalogue.search import search_objects
from studio.core.vectors import vector_literal
from studio.models import PersonalizedObject, SharedEvidence, SharedQuery, SharedVote
from tests.improvement.support import click, load_catalogue, ranking, register, run_improvement, unit

TEXT = "Space Adventure"


@pytest.fixture
def world(db, settled):
    """Six objects whose cosines to the query lie close together (0.800, 0.795, …), as a real top 10 does."""
    rng = np.random.default_rng(11)
    query = unit(rng)[0]
    vectors = {}
    for i in range(6):
        across = unit(rng)[0]
        across = across - (across @ query) * query
        across /= np.linalg.norm(across)
        cos = 0.80 - 0.005 * i
        vectors[f"o{i}"] = (cos * query + np.sqrt(1 - cos**2) * across).astype(np.float32)
    load_catalogue(vectors)
    return {"rng": rng, "query": query, "vectors": vectors}


def shared_ranking(query, *, user_id=None, text=TEXT, limit=6):
    """(object ids, which of them the shared tier moved) for a text search."""
    hits = search_objects(query_vector=[float(x) for x in query], user_id=user_id, limit=limit, query_text=text).hits
    return [h.object_id for h in hits], {h.object_id for h in hits if h.shared}


def teach(world, *, users, target_position=4, sessions_each=1, text=TEXT):
    """Each user (None: an anonymous session) clicks the object at ``target_position`` of the base ranking."""
    order = ranking(world["query"], None)
    for user in users:
        for _ in range(sessions_each):
            session = register(user_id=user, shown=order[:6], query_vector=world["query"], query=text)
            click(session, order[target_position])
    return order, order[target_position]


def shared_state() -> tuple[set, set]:
    evidence = {(e.query, e.object_id, round(e.evidence, 9), e.users) for e in SharedEvidence.objects.all()}
    return evidence, set(SharedQuery.objects.values_list("query", "voters"))


def test_two_users_clicks_lift_the_object_for_everyone_who_runs_the_query(world):
    order, target = teach(world, users=["alice", "bob"])
    run_improvement()
    ids, moved = shared_ranking(world["query"])  # anonymous
    assert ids.index(target) < order.index(target) and target in moved
    carol, _ = shared_ranking(world["query"], user_id="carol")  # a user who never clicked
    assert carol == ids
    assert shared_ranking(world["query"], text="  space   ADVENTURE ")[0] == ids  # normalized text
    other = near(world, cos=0.5)  # another query, far from this one: untouched
    assert shared_ranking(other, text="something else") == (ranking(other, None)[:6], set())
    assert ranking(world["query"], None) == order  # a vector-only search has no text: untouched


def near(world, *, cos: float) -> np.ndarray:
    """A unit query vector at cosine ``cos`` to the world's query (another wording of it, or another query)."""
    across = world["rng"].standard_normal(world["query"].shape[0])
    across -= (across @ world["query"]) * world["query"]
    across /= np.linalg.norm(across)
    return (cos * world["query"] + np.sqrt(1 - cos**2) * across).astype(np.float32)


def scores(query, *, text):
    """Object id → score of a search (anonymous; ``text`` keys the shared tier)."""
    return {
        h.object_id: h.score
        for h in search_objects(query_vector=list(map(float, query)), limit=6, query_text=text).hits
    }


def test_a_similar_query_not_seen_verbatim_borrows_the_offsets_scaled_by_its_similarity(world, settings):
    settings.IMPROVEMENT_SHARED_QUERY_SHIFT = 0.0  # the offsets alone: the shift moves every score
    order, target = teach(world, users=["alice", "bob"])
    run_improvement()
    assert SharedQuery.objects.get(query="space adventure").vector is not None  # kept for borrowing
    reworded = near(world, cos=0.95)
    base = ranking(reworded, None)[:6]
    ids, moved = shared_ranking(reworded, text="space adventures")
    assert moved == shared_ranking(world["query"])[1] and ids.index(target) < base.index(target)
    exact, lifted, borrowed = (scores(world["query"], text=t) for t in (None, TEXT, "space adventures"))
    # The same vector under another text borrows at similarity 1: the same lift as the query itself.
    assert borrowed[target] == pytest.approx(lifted[target], abs=1e-6) and lifted[target] > exact[target]
    lift = lifted[target] - exact[target]
    at_095 = scores(reworded, text="space adventures")[target] - scores(reworded, text=None)[target]
    assert at_095 == pytest.approx(0.95 * lift, abs=1e-4)  # at cosine 0.95: 0.95 of the lift

    far = near(world, cos=0.6)  # below the similarity: borrows nothing
    assert shared_ranking(far, text="cooking") == (ranking(far, None)[:6], set())
    settings.IMPROVEMENT_SHARED_BORROW_SIMILARITY = None  # off: only the query itself
    assert shared_ranking(reworded, text="space adventures") == (base, set())


def test_a_query_the_tier_knows_uses_its_own_offsets_not_a_similar_ones(world):
    order, target = teach(world, users=["alice", "bob"], target_position=4)
    teach(world, users=["carol", "dave"], target_position=3, text="space adventures")
    run_improvement()
    own = shared_ranking(world["query"], text="space adventures")[0]
    assert own.index(order[3]) < own.index(order[4])  # its own clicks (position 3), not the similar query's (4)
    assert shared_ranking(world["query"])[0].index(order[4]) < shared_ranking(world["query"])[0].index(order[3])


def test_one_users_sessions_on_a_similar_text_change_nobody_elses_ranking_for_it(world):
    teach(world, users=["alice", "bob"])
    run_improvement()
    before = shared_ranking(world["query"], text="space adventures")
    assert before[1]  # borrowed from "space adventure"
    teach(world, users=["carol"], target_position=2, sessions_each=3, text="space adventures")
    run_improvement()
    assert SharedQuery.objects.get(query="space adventures").voters == 1
    assert shared_ranking(world["query"], text="space adventures") == before  # still borrowed: carol is invisible


def test_a_query_taught_by_one_voter_lends_nothing(world):
    teach(world, users=["alice"], sessions_each=3)
    run_improvement()
    reworded = near(world, cos=0.95)
    assert shared_ranking(reworded, text="space adventures") == (ranking(reworded, None)[:6], set())


def test_one_user_alone_changes_nobody_elses_ranking(world):
    order, _ = teach(world, users=["alice"], sessions_each=3)
    run_improvement()
    assert SharedVote.objects.count() > 0
    assert shared_ranking(world["query"]) == (order[:6], set())
    assert shared_ranking(world["query"], user_id="bob") == (order[:6], set())


def test_anonymous_sessions_teach_the_shared_tier(world):
    order, target = teach(world, users=[None, None])
    run = run_improvement()
    assert run.claimed == 2
    ids, moved = shared_ranking(world["query"])
    assert ids.index(target) < order.index(target) and target in moved
    assert not PersonalizedObject.objects.exists()  # no copies: anonymous sessions teach only the shared tier


def test_one_users_thousand_sessions_weigh_as_one(world):
    teach(world, users=["alice", "bob"], sessions_each=1)
    run_improvement()
    once = shared_state()
    SharedVote.objects.all().delete()
    SharedEvidence.objects.all().delete()
    SharedQuery.objects.all().delete()
    teach(world, users=["alice"], sessions_each=1000)
    teach(world, users=["bob"], sessions_each=1)
    run_improvement()
    assert shared_state() == once


def test_forgetting_a_user_leaves_the_state_of_a_run_that_never_saw_them(world, make_client):
    teach(world, users=["alice", "carol"], target_position=4)
    teach(world, users=["bob"], target_position=3)
    run_improvement()
    response = make_client("admin").delete("/api/v1/users/bob")
    assert response.status_code == 200 and response.json()["shared_votes"] > 0
    forgotten = shared_state()

    SharedVote.objects.all().delete()
    SharedEvidence.objects.all().delete()
    SharedQuery.objects.all().delete()
    teach(world, users=["alice", "carol"], target_position=4)  # the same history, without bob
    run_improvement()
    assert shared_state() == forgotten
    assert shared.derived_matches_votes()


def test_weight_zero_switches_the_shared_tier_off(world, settings):
    order, _ = teach(world, users=["alice", "bob"])
    settings.IMPROVEMENT_SHARED_WEIGHT = 0.0
    run_improvement()
    assert not SharedVote.objects.exists()
    assert shared_ranking(world["query"]) == (order[:6], set())


def test_the_shared_tier_and_a_users_copy_compose(world):
    order, target = teach(world, users=["alice", "bob"])
    run_improvement()
    ids, moved = shared_ranking(world["query"], user_id="alice")
    assert ids.index(target) <= shared_ranking(world["query"])[0].index(target)
    assert target in moved


def test_a_copy_is_never_written_from_an_original_replaced_during_the_run(world):
    order = ranking(world["query"], None)
    target = order[3]
    click(register(user_id="alice", shown=order[:6], query_vector=world["query"]), target)
    replacement = np.asarray(world["vectors"][target], dtype=np.float32)

    def adjust_while_the_catalogue_changes(**kwargs):
        result = adjuster.adjust(**kwargs)
        # Meanwhile, the catalogue re-upserts the clicked original (its own transaction, committed).
        catalogue_services.upsert_objects(
            items=[catalogue_services.ObjectInput(object_id=target, vectors=[replacement.tolist()])]
        )
        return result

    run = improvement_services.create_run(trigger=RunTrigger.COMMAND)
    run = improvement_services.execute_run(run_id=run.pk, adjust=adjust_while_the_catalogue_changes)
    assert run.used == 1
    assert not PersonalizedObject.objects.filter(original__object_id=target).exists()
    # The others' copies were learned from unchanged originals: written as usual.
    assert PersonalizedObject.objects.filter(user_id="alice").exists()


def test_the_admin_shows_the_shared_tier_by_query_and_resets_one(world, admin_client):
    from django.urls import reverse

    _order, target = teach(world, users=["alice", "bob"])
    run_improvement()
    query = SharedQuery.objects.get()
    assert (query.query, query.voters) == ("space adventure", 2)
    listing = admin_client.get(reverse("admin:studio_sharedquery_changelist"))
    assert listing.status_code == 200 and "space adventure" in listing.content.decode()
    detail = admin_client.get(reverse("admin:studio_sharedquery_change", args=[query.pk])).content.decode()
    assert target in detail and "distinct users" in detail
    response = admin_client.post(
        reverse("admin:studio_sharedquery_changelist"), {"action": "reset_queries", "_selected_action": [query.pk]}
    )
    assert response.status_code == 302
    assert not SharedVote.objects.exists() and not SharedQuery.objects.exists()
    assert shared_ranking(world["query"])[1] == set()


def twin_and_opposite(world, target: str) -> None:
    """Two objects outside the first page at the same cosine (0.70) to the query: one on the clicked object's
    side of it (cosine ≈ 0.99 to it), one on the far side (≈ 0.10)."""
    query, clicked = world["query"], world["vectors"][target]
    across = clicked - (clicked @ query) * query
    across /= np.linalg.norm(across)
    side = np.sqrt(1 - 0.70**2) * across
    load_catalogue({"twin": 0.70 * query + side, "opposite": 0.70 * query - side})


def distances(query, *, text, user_id=None):
    """Object id → distance of a search over the whole catalogue, and the search's meta."""
    result = search_objects(query_vector=list(map(float, query)), user_id=user_id, limit=8, query_text=text)
    return {h.object_id: h.distance for h in result.hits}, result.meta


def test_the_query_shift_brings_what_resembles_the_clicks_closer_for_everyone(world, settings):
    _order, target = teach(world, users=["alice", "bob"])
    run_improvement()
    twin_and_opposite(world, target)
    moved, meta = distances(world["query"], text=TEXT)
    # Nobody clicked or was shown the twin: it comes closer only because the query moved toward the click.
    assert moved["twin"] < 0.30 - 0.005 and moved["opposite"] > 0.30 + 0.005
    assert meta["shared_query_shift"] > 0
    assert distances(world["query"], text=TEXT, user_id="carol")[0] == moved  # everyone alike
    still, meta = distances(world["query"], text=None)  # a vector-only search: no shared tier, no shift
    assert still["twin"] == pytest.approx(0.30, abs=1e-5) and still["opposite"] == pytest.approx(0.30, abs=1e-5)
    assert "shared_query_shift" not in meta
    settings.IMPROVEMENT_SHARED_QUERY_SHIFT = 0.0  # off: the offsets alone
    off, meta = distances(world["query"], text=TEXT)
    assert off["twin"] == pytest.approx(off["opposite"], abs=1e-5) and "shared_query_shift" not in meta


@pytest.mark.parametrize(("metric", "op"), [("cosine", "<=>"), ("euclid", "<->")])
def test_the_query_shift_is_the_offset_weighted_step_toward_each_object(world, settings, metric, op):
    """q' = q + shift · Σ w_o (v_o − q) / max(1, Σ |w_o|) with w_o = offset / max offset: between unit vectors
    with the query's length kept under cosine, between the vectors themselves under euclid."""
    teach(world, users=["alice", "bob"])
    run_improvement()
    settings.IMPROVEMENT_SHARED_QUERY_SHIFT = 0.4
    query = world["query"].astype(np.float64) * 2.0  # a query of length 2
    offsets = shared.query_offsets(query="space adventure")
    weights = np.array([o.offset for o in offsets if o.offset]) / settings.IMPROVEMENT_SHARED_MAX_OFFSET
    vectors = np.array([world["vectors"][o.object_id] for o in offsets if o.offset], dtype=np.float64)
    assert len(weights) >= 2 and (weights > 0).any() and (weights < 0).any()  # the click and the skipped above
    base, points = (query / 2.0, vectors) if metric == "cosine" else (query, vectors)
    points = points / np.linalg.norm(points, axis=1, keepdims=True) if metric == "cosine" else points
    step = base + 0.4 * (weights @ (points - base)) / max(1.0, np.abs(weights).sum())
    expected = step / np.linalg.norm(step) * 2.0 if metric == "cosine" else step
    params = {**shared.offset_params(query="space adventure"), "q": vector_literal(query)}
    moved = shared.shifted_query(query_vector=query, params=params, op=op, metric=metric)
    np.testing.assert_allclose(moved, expected, atol=1e-5)

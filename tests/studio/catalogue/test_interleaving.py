"""studio.catalogue.interleaving: team-draft interleaving of the learned and the base ranking, and search
showing it to ``STUDIO_INTERLEAVE_FRACTION`` of tracked sessions (teams recorded, invisible to the client)."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest

from clickstream.models import Session
from studio.catalogue.interleaving import BASE, BOTH, LEARNED, interleaved, team_draft
from tests.improvement.support import load_catalogue, near, unit


def _cases(count: int = 300):
    rng = random.Random(5)
    for _ in range(count):
        pool = [f"o{i}" for i in range(rng.randint(1, 30))]
        learned = rng.sample(pool, rng.randint(0, len(pool)))
        base = rng.sample(pool, rng.randint(0, len(pool)))
        if learned and rng.random() < 0.5:  # half of the cases: the rankings share a prefix
            shared = learned[: rng.randint(1, len(learned))]
            base = shared + [item for item in base if item not in shared]
        yield learned, base, rng.randint(1, 20), uuid.uuid4().hex


def test_a_team_draft_shows_no_result_twice_keeps_each_teams_order_and_balances_the_teams():
    for learned, base, limit, seed in _cases():
        drafted = team_draft(learned, base, limit=limit, seed=seed)
        items = [item for item, _ in drafted]
        assert len(items) == len(set(items)) == min(limit, len(set(learned) | set(base)))
        for team, ranking in ((LEARNED, learned), (BASE, base)):
            picked = [item for item, by in drafted if by == team]
            assert picked == sorted(picked, key=ranking.index)  # each team gives its results in its own order
        both = [item for item, by in drafted if by == BOTH]
        assert both == items[: len(both)] == learned[: len(both)] == base[: len(both)]  # the common prefix
        assert (
            len(both) == limit
            or len(both) == len(learned)
            or len(both) == len(base)
            or (learned[len(both)] != base[len(both)])
        )
        for n in range(len(both), len(drafted) + 1):
            learned_picks = sum(1 for _, by in drafted[:n] if by == LEARNED)
            base_picks = sum(1 for _, by in drafted[:n] if by == BASE)
            left = {LEARNED: set(learned) - set(items[:n]), BASE: set(base) - set(items[:n])}
            if left[LEARNED] and left[BASE]:  # while both can still pick, they stay within one of each other
                assert abs(learned_picks - base_picks) <= 1, (learned, base, drafted)


def test_a_team_draft_is_deterministic_per_session_and_identical_rankings_stay_identical():
    ranking = [f"o{i}" for i in range(10)]
    first = team_draft(ranking, ranking[::-1], limit=10, seed="session-1")
    assert first == team_draft(ranking, ranking[::-1], limit=10, seed="session-1")
    assert team_draft(ranking, ranking, limit=10, seed="s") == [(item, BOTH) for item in ranking]


def test_the_common_prefix_is_shown_first_and_credited_to_neither_team():
    learned = ["a", "b", "c", "x", "y"]
    base = ["a", "b", "c", "y", "z"]
    for seed in ("s1", "s2", "s3", "s4"):
        drafted = team_draft(learned, base, limit=5, seed=seed)
        assert drafted[:3] == [("a", BOTH), ("b", BOTH), ("c", BOTH)]
        assert {team for _, team in drafted[3:]} == {LEARNED, BASE}  # after it, one pick each


def test_sessions_are_interleaved_deterministically_at_the_configured_fraction():
    ids = [f"session-{i}" for i in range(5000)]
    assert not any(interleaved(session_id=i, fraction=0.0) for i in ids)
    assert all(interleaved(session_id=i, fraction=1.0) for i in ids)
    share = sum(interleaved(session_id=i, fraction=0.3) for i in ids) / len(ids)
    assert 0.27 < share < 0.33
    assert [interleaved(session_id=i, fraction=0.3) for i in ids[:50]] == [
        interleaved(session_id=i, fraction=0.3) for i in ids[:50]
    ]


@pytest.fixture
def catalogue(db):
    rng = np.random.default_rng(3)
    query = unit(rng)[0]
    load_catalogue({f"m{i}": near(rng, query, 0.05 + 0.01 * i) for i in range(20)})
    return [float(x) for x in query]


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_search_records_each_shown_results_team_only_for_interleaved_sessions(
    catalogue, make_client, settings, fraction
):
    settings.STUDIO_INTERLEAVE_FRACTION = fraction
    response = make_client("search").post(
        "/api/v1/search", {"query_vector": catalogue, "user_id": "u", "limit": 10}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert [hit["rank"] for hit in body["results"]] == list(range(1, 11))
    assert len({hit["object_id"] for hit in body["results"]}) == 10
    assert all("team" not in hit for hit in body["results"])  # the client sees an ordinary ranking
    session = Session.objects.get(session_id=body["session_id"])
    teams = [result.meta.get("team") for result in session.results.order_by("position")]
    if fraction:
        assert session.search_meta["interleaving"] == "team_draft"
        assert set(teams) == {BOTH}  # no copies yet: the rankings agree, the page is their common prefix
    else:
        assert "interleaving" not in session.search_meta and set(teams) == {None}


def test_untracked_and_later_pages_are_never_interleaved(catalogue, make_client, settings):
    settings.STUDIO_INTERLEAVE_FRACTION = 1.0
    client = make_client("search")
    page_two = client.post(
        "/api/v1/search", {"query_vector": catalogue, "user_id": "u", "offset": 10}, format="json"
    ).json()
    assert "interleaving" not in Session.objects.get(session_id=page_two["session_id"]).search_meta
    untracked = client.post("/api/v1/search", {"query_vector": catalogue, "track": False}, format="json")
    assert untracked.status_code == 200 and not Session.objects.exclude(session_id=page_two["session_id"]).exists()

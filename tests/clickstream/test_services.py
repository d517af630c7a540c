"""clickstream.services against the real database: registering sessions, events, forgetting users."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from clickstream import services
from clickstream.models import Session, ShownResult
from clickstream.services import ShownResultInput
from tests.support import unit_vector


def register(session_id="s1", **overrides):
    kwargs = {
        "session_id": session_id,
        "user_id": "u1",
        "search_query": "comedy movies",
        "query_vector": None,
        "results": [ShownResultInput(object_id="a", score=0.9), ShownResultInput(object_id="b", meta={"k": 1})],
        "search_meta": {"page": 1},
    }
    kwargs.update(overrides)
    return services.register_session(**kwargs)


def test_register_session_creates_session_and_results_in_shown_order(db):
    outcome = register()
    assert outcome.status == "created"
    session = Session.objects.get(session_id="s1")
    assert outcome.session.pk == session.pk
    assert session.user_id == "u1"
    assert session.query_vector is None  # embedded later by the improvement run
    assert session.improvement_status == "pending"
    assert len(session.fingerprint) == 64
    results = list(
        ShownResult.objects.filter(session=session)
        .order_by("position")
        .values_list("position", "object_id", "score", "meta")
    )
    assert results == [(0, "a", 0.9, {}), (1, "b", None, {"k": 1})]


def test_register_session_replay_returns_stored_session_and_conflict_raises(db):
    created = register()
    replay = register()
    assert replay.status == "replayed"
    assert replay.session.pk == created.session.pk
    with pytest.raises(services.SessionConflict):
        register(search_query="other query")
    assert Session.objects.count() == 1
    assert ShownResult.objects.count() == 2


def test_register_session_generates_an_id_and_stores_the_query_vector(db):
    outcome = register(session_id=None, query_vector=unit_vector(1.0))
    assert len(outcome.session.session_id) == 32
    stored = Session.objects.get(pk=outcome.session.pk)
    assert list(stored.query_vector[:2]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"query_vector": [1.0, 2.0]}, "query_vector"),
        ({"query_vector": unit_vector(float("nan"))}, "query_vector"),
        (
            {"results": [ShownResultInput(object_id="a"), ShownResultInput(object_id="a")]},
            "search_results[1].object_id",
        ),
        ({"results": [ShownResultInput(object_id="")]}, "search_results[0].object_id"),
        ({"user_id": "x" * 257}, "user_id"),
        ({"session_id": "a/b"}, "session_id"),
        ({"search_meta": {"big": "x" * 20000}}, "search_meta"),
        ({"created_at": timezone.now() - timedelta(days=30)}, "created_at"),
    ],
)
def test_register_session_refuses_bad_input_naming_the_field(db, overrides, field):
    with pytest.raises(services.SessionInvalid) as info:
        register(**overrides)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert Session.objects.count() == 0

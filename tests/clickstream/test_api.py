"""clickstream.api, the REST API, against the real database: every endpoint and every bad-input case."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from clickstream.models import Event, Session, ShownResult
from tests.support import unit_vector

SESSIONS = "/api/v1/clickstream/sessions"
BATCH = "/api/v1/clickstream/sessions/batch"
EVENTS = "/api/v1/clickstream/events"


@pytest.fixture
def ingest(make_client):
    return make_client("ingest", "sessions:read")  # writes sessions and reads them back


def session_body(session_id="s1", **overrides):
    body = {
        "session_id": session_id,
        "user_id": "u1",
        "search_query": "comedy movies",
        "search_results": [{"object_id": "a", "score": 0.9}, {"object_id": "b"}, {"object_id": "c", "meta": {"x": 1}}],
        "search_meta": {"page": 1},
    }
    body.update(overrides)
    return body


def post_session(client, **overrides):
    return client.post(SESSIONS, session_body(**overrides), format="json")


def table_counts():
    return Session.objects.count(), ShownResult.objects.count(), Event.objects.count()


def iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat()


# --- auth ---------------------------------------------------------------------------------------


def test_ingest_endpoints_need_a_key_with_the_ingest_scope(make_client, client):
    anonymous = client.post(SESSIONS, session_body(), content_type="application/json")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    search_only = make_client("search")
    for url in (SESSIONS, BATCH, EVENTS, f"{SESSIONS}/s1/events", f"{SESSIONS}/s1/irrelevant"):
        response = search_only.post(url, {}, format="json")
        assert response.status_code == 403, url
        assert "ingest" in response.json()["error"]["message"]
    assert search_only.get(f"{SESSIONS}/s1").status_code == 403
    assert table_counts() == (0, 0, 0)


def test_a_key_over_its_rate_gets_429_with_retry_after(ingest, monkeypatch):
    from studio.core.auth import ApiKeyRateThrottle

    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    statuses = [ingest.get(f"{SESSIONS}/nope").status_code for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    response = ingest.get(f"{SESSIONS}/nope")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "throttled"


# --- single session -----------------------------------------------------------------------------


def test_register_session_201_then_identical_replay_200_then_conflict_409(ingest):
    created = post_session(ingest)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["session_id"] == "s1"
    assert [r["object_id"] for r in body["search_results"]] == ["a", "b", "c"]
    assert [r["position"] for r in body["search_results"]] == [0, 1, 2]
    assert body["improvement"]["status"] == "pending"
    assert body["has_query_vector"] is False
    assert body["events"] == []

    replay = post_session(ingest)
    assert replay.status_code == 200
    assert replay.json()["search_results"] == body["search_results"]
    assert replay.json()["received_at"] == body["received_at"]

    conflict = post_session(ingest, search_results=[{"object_id": "z"}])
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "conflict"
    assert "session_id" in conflict.json()["error"]["fields"]
    assert table_counts() == (1, 3, 0)


def test_register_session_stores_vector_timestamp_and_defaults(ingest):
    created_at = iso(-timedelta(hours=1))
    response = post_session(ingest, query_vector=unit_vector(0.6, 0.8), created_at=created_at, user_id=None)
    assert response.status_code == 201, response.content
    session = Session.objects.get(session_id="s1")
    assert session.user_id is None
    assert session.created_at == datetime.fromisoformat(created_at)
    assert session.received_at > session.created_at
    assert [round(float(x), 3) for x in session.query_vector[:2]] == [0.6, 0.8]
    fetched = ingest.get(f"{SESSIONS}/s1?vector=1").json()
    assert fetched["has_query_vector"] is True
    assert len(fetched["query_vector"]) == len(unit_vector())


def test_register_session_accepts_epoch_seconds_and_replays_them_identically(ingest):
    epoch = time.time() - 60
    assert post_session(ingest, created_at=epoch).status_code == 201
    assert post_session(ingest, created_at=epoch).status_code == 200
    stored = Session.objects.get(session_id="s1").created_at
    assert abs(stored.timestamp() - epoch) < 1e-3


def test_a_session_without_results_is_stored(ingest):
    assert post_session(ingest, search_results=[]).status_code == 201
    assert table_counts() == (1, 0, 0)


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"session_id": None}, "session_id", "invalid"),
        ({"session_id": ""}, "session_id", "invalid"),
        ({"session_id": "x" * 257}, "session_id", "too_long"),
        ({"session_id": "a/b"}, "session_id", "invalid"),
        ({"session_id": "batch"}, "session_id", "invalid"),
        ({"session_id": 12}, "session_id", "invalid"),
        ({"user_id": 5}, "user_id", "invalid"),
        ({"user_id": "u" * 300}, "user_id", "too_long"),
        ({"search_query": ["x"]}, "search_query", "invalid"),
        ({"query_vector": [1.0, 2.0]}, "query_vector", "invalid_vector"),
        ({"query_vector": "abc"}, "query_vector", "invalid_vector"),
        ({"query_vector": unit_vector(1.0)[:-1] + ["x"]}, "query_vector", "invalid_vector"),
        ({"search_results": "a,b"}, "search_results", "invalid"),
        ({"search_results": ["a"]}, "search_results[0]", "invalid"),
        ({"search_results": [{"object_id": "a"}, {"object_id": "a"}]}, "search_results[1].object_id", None),
        ({"search_results": [{"object_id": ""}]}, "search_results[0].object_id", "invalid"),
        ({"search_results": [{"object_id": "a", "position": -1}]}, "search_results[0].position", "unknown_field"),
        ({"search_results": [{"object_id": "a", "score": "high"}]}, "search_results[0].score", "invalid"),
        ({"search_results": [{"object_id": "a", "meta": [1]}]}, "search_results[0].meta", "invalid"),
        ({"search_results": [{"object_id": "a", "meta": {"b": "x" * 20000}}]}, "search_results[0].meta", None),
        ({"search_meta": {"b": "x" * 20000}}, "search_meta", "json_too_large"),
        ({"search_meta": "page=1"}, "search_meta", "invalid"),
        ({"created_at": "yesterday"}, "created_at", "invalid_timestamp"),
        ({"created_at": True}, "created_at", "invalid_timestamp"),
        ({"created_at": 1e30}, "created_at", "invalid_timestamp"),
        ({"created_at": iso(-timedelta(days=8))}, "created_at", "timestamp_out_of_window"),
        ({"created_at": iso(timedelta(minutes=10))}, "created_at", "timestamp_out_of_window"),
        ({"colour": "red"}, "colour", "unknown_field"),
        ({"search_results": [{"object_id": "a", "score": 10**400}]}, "search_results[0].score", "invalid"),
        ({"created_at": 10**400}, "created_at", "invalid_timestamp"),
        ({"query_vector": [10**400] + unit_vector(1.0)[1:]}, "query_vector", "invalid_vector"),
    ],
)
def test_register_session_bad_input_is_400_naming_the_field_and_writes_nothing(ingest, overrides, field, code):
    response = post_session(ingest, **overrides)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    if code:
        assert error["code"] == code
    assert table_counts() == (0, 0, 0)


def test_register_session_missing_fields_and_bad_bodies(ingest, settings):
    body = session_body()
    del body["search_results"]
    assert ingest.post(SESSIONS, body, format="json").json()["error"]["fields"] == {
        "search_results": ["is required (the results in shown order)"]
    }
    assert ingest.post(SESSIONS, [session_body()], format="json").status_code == 400
    broken = ingest.post(SESSIONS, "{not json", content_type="application/json")
    assert broken.status_code == 400
    settings.CLICKSTREAM_MAX_RESULTS_PER_SESSION = 2
    too_many = post_session(ingest)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "too_many_results"
    assert table_counts() == (0, 0, 0)


# --- sessions batch -----------------------------------------------------------------------------


def test_sessions_batch_reports_per_item_and_stores_the_good_ones(ingest):
    post_session(ingest, session_id="old")
    sessions = [
        session_body("b1"),
        session_body("b2", query_vector=[1.0]),  # bad dimension
        session_body("old"),  # identical replay
        session_body("old", search_query="changed"),  # conflict
        session_body("b3", created_at=iso(-timedelta(days=30))),  # out of window
        session_body("b1"),  # repeats item 0 identically
        session_body("b4", search_results=[{"object_id": "q"}]),
        "not an object",
    ]
    response = ingest.post(BATCH, {"sessions": sessions}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 2
    assert body["duplicates"] == 2
    assert [(r["index"], r["session_id"], r["code"]) for r in body["rejected"]] == [
        (1, "b2", "invalid_vector"),
        (3, "old", "conflict"),
        (4, "b3", "timestamp_out_of_window"),
        (7, None, "invalid"),
    ]
    assert [(s["index"], s["status"]) for s in body["sessions"]] == [
        (0, "created"),
        (2, "replayed"),
        (5, "replayed"),
        (6, "created"),
    ]
    assert set(Session.objects.values_list("session_id", flat=True)) == {"old", "b1", "b4"}
    assert ShownResult.objects.filter(session__session_id="b4").count() == 1
    assert Session.objects.get(session_id="old").search_query == "comedy movies"
    # Repeating the whole request is safe.
    again = ingest.post(BATCH, {"sessions": sessions}, format="json").json()
    assert (again["accepted"], again["duplicates"], len(again["rejected"])) == (0, 4, 4)
    assert table_counts() == (3, 7, 0)


def test_sessions_batch_conflicting_repeat_inside_one_batch(ingest):
    body = {"sessions": [session_body("x"), session_body("x", user_id="other")]}
    result = ingest.post(BATCH, body, format="json").json()
    assert result["accepted"] == 1
    assert [(r["index"], r["code"]) for r in result["rejected"]] == [(1, "conflict")]
    assert Session.objects.get(session_id="x").user_id == "u1"


def test_sessions_batch_envelope_errors(ingest, settings):
    settings.CLICKSTREAM_MAX_SESSIONS_PER_BATCH = 2
    too_many = ingest.post(BATCH, {"sessions": [session_body(f"s{i}") for i in range(3)]}, format="json")
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "too_many_items"
    assert ingest.post(BATCH, {"sessions": []}, format="json").status_code == 400
    assert ingest.post(BATCH, {"sessions": [session_body()], "extra": 1}, format="json").status_code == 400
    assert ingest.post(BATCH, {"session": [session_body()]}, format="json").status_code == 400
    assert table_counts() == (0, 0, 0)


# --- read, irrelevant ---------------------------------------------------------------------------


def test_get_session_shows_results_events_and_status(ingest):
    post_session(ingest)
    ingest.post(
        f"{SESSIONS}/s1/events",
        {"events": [{"event_id": "e1", "object_id": "b"}, {"event_id": "e2", "object_id": "b", "event_type": "buy"}]},
        format="json",
    )
    body = ingest.get(f"{SESSIONS}/s1").json()
    assert body["event_count"] == 2
    assert [(r["object_id"], r["event_count"]) for r in body["search_results"]] == [("a", 0), ("b", 2), ("c", 0)]
    assert [(e["event_id"], e["event_type"]) for e in body["events"]] == [("e1", "click"), ("e2", "buy")]
    assert body["improvement"] == {"status": "pending", "detail": "", "attempts": 0, "improved_at": None}
    assert "query_vector" not in body
    missing = ingest.get(f"{SESSIONS}/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_irrelevant_is_idempotent_and_404_for_unknown(ingest):
    post_session(ingest)
    for _ in range(2):
        response = ingest.post(f"{SESSIONS}/s1/irrelevant")
        assert response.status_code == 200
        assert response.json() == {"session_id": "s1", "is_irrelevant": True, "improvement_status": "pending"}
    assert Session.objects.get(session_id="s1").is_irrelevant is True
    assert ingest.get(f"{SESSIONS}/s1").json()["is_irrelevant"] is True
    assert ingest.post(f"{SESSIONS}/nope/irrelevant").status_code == 404


# --- events -------------------------------------------------------------------------------------


def test_session_events_accepted_duplicates_rejected(ingest):
    post_session(ingest)
    events = [
        {"event_id": "e1", "object_id": "a"},
        {"event_id": "e2", "object_id": "c", "event_type": "add_to_cart", "created_at": time.time(), "meta": {"q": 1}},
        {"event_id": "e3", "object_id": "zzz"},  # not shown
        {"event_id": "e1", "object_id": "a"},  # repeats item 0
        {"event_id": "e4", "object_id": "a", "created_at": iso(-timedelta(days=9))},
        {"event_id": "e5", "object_id": "a", "created_at": iso(timedelta(hours=1))},
        {"event_id": "e6", "object_id": "a", "created_at": "soon"},
        {"event_id": "", "object_id": "a"},
        {"object_id": "a"},
        {"event_id": "e7"},
        {"event_id": "e8", "object_id": "a", "meta": {"x": "y" * 20000}},
        {"event_id": "e9", "object_id": "a", "event_type": "t" * 65},
        {"event_id": "e10", "object_id": "a", "where": "home"},
        {"event_id": "e11", "object_id": "a", "session_id": "other"},
        {"event_id": "e12", "object_id": "a", "session_id": "s1"},  # naming its own session is fine
        7,
    ]
    response = ingest.post(f"{SESSIONS}/s1/events", {"events": events}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 3
    assert body["duplicates"] == 1
    assert [(r["index"], r["event_id"], r["code"]) for r in body["rejected"]] == [
        (2, "e3", "object_not_shown"),
        (4, "e4", "timestamp_out_of_window"),
        (5, "e5", "timestamp_out_of_window"),
        (6, "e6", "invalid_timestamp"),
        (7, "", "invalid"),
        (8, None, "invalid"),
        (9, "e7", "invalid"),
        (10, "e8", "json_too_large"),
        (11, "e9", "too_long"),
        (12, "e10", "unknown_field"),
        (13, "e11", "session_mismatch"),
        (15, None, "invalid"),
    ]
    assert all(r["message"] for r in body["rejected"])
    stored = {e.event_id: e for e in Event.objects.all()}
    assert set(stored) == {"e1", "e2", "e12"}
    assert stored["e2"].event_type == "add_to_cart"
    assert stored["e2"].meta == {"q": 1}
    assert stored["e1"].event_type == "click"
    # A retry of the same request changes nothing.
    again = ingest.post(f"{SESSIONS}/s1/events", {"events": events}, format="json").json()
    assert (again["accepted"], again["duplicates"], len(again["rejected"])) == (0, 4, 12)
    assert Event.objects.count() == 3


def test_an_event_id_reused_for_another_object_or_type_is_a_conflict_per_item(ingest):
    post_session(ingest)
    url = f"{SESSIONS}/s1/events"
    ingest.post(url, {"events": [{"event_id": "e1", "object_id": "a"}]}, format="json")
    events = [
        {"event_id": "e1", "object_id": "b"},  # stored e1 is a click on a
        {"event_id": "e1", "object_id": "a", "event_type": "add_to_cart"},  # another type
        {"event_id": "e1", "object_id": "a", "meta": {"retry": 1}},  # same object and type: a replay
        {"event_id": "e2", "object_id": "a"},
        {"event_id": "e2", "object_id": "c"},  # repeats item 3 with another object
    ]
    body = ingest.post(url, {"events": events}, format="json").json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    assert [(r["index"], r["event_id"], r["code"]) for r in body["rejected"]] == [
        (0, "e1", "event_id_conflict"),
        (1, "e1", "event_id_conflict"),
        (2, "e1", "event_id_conflict"),  # repeats item 0, which was refused
        (4, "e2", "event_id_conflict"),
    ]
    assert sorted(Event.objects.values_list("event_id", "object_id")) == [("e1", "a"), ("e2", "a")]
    replay = ingest.post(url, {"events": [{"event_id": "e1", "object_id": "a"}]}, format="json").json()
    assert replay == {"accepted": 0, "duplicates": 1, "rejected": []}


def test_sessions_that_could_never_teach_are_refused_at_the_door(ingest, settings):
    settings.STUDIO_METRIC = "cosine"
    cases = [
        ({"query_vector": [0.0] * 384}, "query_vector", "zero_vector"),
        ({"query_vector": [1e-40] * 384}, "query_vector", "zero_vector"),  # zero once stored as float4
        ({"query_vector": [1e20] * 384}, "query_vector", "invalid_vector"),  # its squared length overflows
        ({"search_query": "", "query_vector": None}, "search_query", "missing_query"),
        ({"search_query": "   "}, "search_query", "missing_query"),
    ]
    for overrides, field, code in cases:
        response = post_session(ingest, **overrides)
        assert response.status_code == 400, (overrides, response.content)
        error = response.json()["error"]
        assert (list(error["fields"]), error["code"]) == ([field], code), overrides
    assert table_counts() == (0, 0, 0)
    assert post_session(ingest, search_query="", query_vector=unit_vector(1.0)).status_code == 201


@pytest.mark.parametrize("field", ["session_id", "user_id"])
def test_ids_with_surrounding_whitespace_are_refused_not_trimmed(ingest, field):
    response = post_session(ingest, **{field: " u1 "})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
    events = ingest.post(EVENTS, {"events": [{"session_id": "s1 ", "event_id": "e1", "object_id": "a"}]}, format="json")
    assert [r["code"] for r in events.json()["rejected"]] == ["invalid"]
    assert table_counts() == (0, 0, 0)


def test_session_events_unknown_session_404_and_envelope_limits(ingest, settings):
    assert (
        ingest.post(
            f"{SESSIONS}/nope/events", {"events": [{"event_id": "e", "object_id": "a"}]}, format="json"
        ).status_code
        == 404
    )
    post_session(ingest)
    settings.CLICKSTREAM_MAX_EVENTS_PER_REQUEST = 2
    events = [{"event_id": f"e{i}", "object_id": "a"} for i in range(3)]
    response = ingest.post(f"{SESSIONS}/s1/events", {"events": events}, format="json")
    assert response.status_code == 413
    assert ingest.post(EVENTS, {"events": events}, format="json").status_code == 413
    assert ingest.post(f"{SESSIONS}/s1/events", {"events": {}}, format="json").status_code == 400
    assert ingest.post(f"{SESSIONS}/s1/events", [], format="json").status_code == 400
    assert Event.objects.count() == 0


def test_events_for_many_sessions_with_unknown_sessions_per_item(ingest):
    post_session(ingest, session_id="s1")
    post_session(ingest, session_id="s2", search_results=[{"object_id": "x"}])
    events = [
        {"session_id": "s1", "event_id": "e1", "object_id": "a"},
        {"session_id": "s2", "event_id": "e1", "object_id": "x"},  # same event_id, other session: distinct
        {"session_id": "s2", "event_id": "e2", "object_id": "a"},  # a was shown in s1, not s2
        {"session_id": "ghost", "event_id": "e1", "object_id": "a"},
        {"session_id": "ghost", "event_id": "e1", "object_id": "a"},  # repeat of a refused item
        {"event_id": "e3", "object_id": "a"},  # no session_id
        {"session_id": "s1", "event_id": "e9", "object_id": "c", "created_at": "2001-01-01T00:00:00"},
    ]
    body = ingest.post(EVENTS, {"events": events}, format="json").json()
    assert body["accepted"] == 2
    assert body["duplicates"] == 0
    assert [(r["index"], r["session_id"], r["code"]) for r in body["rejected"]] == [
        (2, "s2", "object_not_shown"),
        (3, "ghost", "unknown_session"),
        (4, "ghost", "unknown_session"),
        (5, None, "invalid"),
        (6, "s1", "timestamp_out_of_window"),
    ]
    assert sorted(Event.objects.values_list("session__session_id", "event_id")) == [("s1", "e1"), ("s2", "e1")]


# --- services used by other apps ----------------------------------------------------------------


def test_forget_user_deletes_their_sessions_results_and_events_only(ingest):
    from clickstream import services

    post_session(ingest, session_id="mine1")
    post_session(ingest, session_id="mine2", search_results=[{"object_id": "a"}])
    post_session(ingest, session_id="theirs", user_id="u2")
    for sid in ("mine1", "mine2", "theirs"):
        ingest.post(f"{SESSIONS}/{sid}/events", {"events": [{"event_id": "e", "object_id": "a"}]}, format="json")
    assert services.forget_user(user_id="u1") == {"sessions": 2, "shown_results": 4, "events": 2}
    assert table_counts() == (1, 3, 1)
    assert services.forget_user(user_id="u1") == {"sessions": 0, "shown_results": 0, "events": 0}


def test_set_query_vectors_and_requeue(ingest):
    from clickstream import services
    from studio.core.vectors import InvalidVector

    post_session(ingest)
    pk = Session.objects.get(session_id="s1").pk
    assert services.set_query_vectors(vectors={pk: unit_vector(0.0, 1.0)}) == 1
    assert float(Session.objects.get(pk=pk).query_vector[1]) == 1.0
    with pytest.raises(InvalidVector):
        services.set_query_vectors(vectors={pk: [1.0]})
    Session.objects.filter(pk=pk).update(improvement_status="failed", attempts=3, improvement_detail="boom")
    assert services.requeue_sessions(pks=[pk]) == 1
    session = Session.objects.get(pk=pk)
    assert (session.improvement_status, session.attempts, session.improvement_detail) == ("pending", 0, "")


def test_delete_expired_sessions(ingest):
    from clickstream import services

    post_session(ingest, session_id="old")
    post_session(ingest, session_id="new")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE clickstream_session SET received_at = now() - interval '100 days' WHERE session_id = 'old'"
        )
    cutoff = datetime.now(UTC) - timedelta(days=90)
    assert services.delete_expired_sessions(older_than=cutoff) == {"sessions": 1, "shown_results": 3, "events": 0}
    assert list(Session.objects.values_list("session_id", flat=True)) == ["new"]


def test_openapi_schema_documents_the_clickstream_endpoints(client):
    schema = client.get("/api/v1/schema?format=json").json()
    for route in (
        "/api/v1/clickstream/sessions",
        "/api/v1/clickstream/sessions/batch",
        "/api/v1/clickstream/sessions/{session_id}",
        "/api/v1/clickstream/sessions/{session_id}/events",
        "/api/v1/clickstream/sessions/{session_id}/irrelevant",
        "/api/v1/clickstream/events",
    ):
        assert route in schema["paths"], route
    request = schema["paths"]["/api/v1/clickstream/events"]["post"]["requestBody"]
    assert "ClickstreamEvents" in str(request)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"session_id": "a\\ud800"', "session_id"),
        ('"session_id": "a\\u0000"', "session_id"),
        ('"session_id": "s1", "search_query": "q\\u0000"', "search_query"),
        ('"session_id": "s1", "search_meta": {"k": "\\udc00"}', "search_meta"),
        ('"session_id": "s1", "search_meta": {"k": "\\u0000"}', "search_meta"),
        ('"session_id": "s1", "search_meta": {"k": NaN}', None),
    ],
)
def test_text_postgresql_cannot_store_is_refused_not_a_500(ingest, raw, field):
    body = "{" + raw + ', "search_results": [{"object_id": "a"}]}'
    response = ingest.post(SESSIONS, body, content_type="application/json")
    assert response.status_code == 400, response.content
    if field:
        assert field in response.json()["error"]["fields"]
    assert table_counts() == (0, 0, 0)


def test_events_with_text_postgresql_cannot_store_are_refused_per_item(ingest):
    post_session(ingest)
    body = (
        '{"events": [{"event_id": "e1", "object_id": "a"}, {"event_id": "e\\ud800", "object_id": "a"},'
        ' {"event_id": "e3", "object_id": "a", "meta": {"x": "\\u0000"}},'
        ' {"event_id": "e4", "object_id": "a", "event_type": "\\udfff"}]}'
    )
    result = ingest.post(f"{SESSIONS}/s1/events", body, content_type="application/json").json()
    assert result["accepted"] == 1
    assert [r["index"] for r in result["rejected"]] == [1, 2, 3]
    assert result["rejected"][0]["event_id"] == "e\\ud800"  # echoed escaped, never a 500
    assert Event.objects.count() == 1
    batch = '{"sessions": [{"session_id": "x\\ud800", "search_results": []}]}'
    rejected = ingest.post(BATCH, batch, content_type="application/json").json()["rejected"]
    assert [(r["session_id"], r["code"]) for r in rejected] == [("x\\ud800", "invalid")]


def test_non_ascii_text_round_trips(ingest):
    response = post_session(ingest, session_id="séance-東京", search_query="película 映画", search_meta={"ü": "ß"})
    assert response.status_code == 201, response.content
    body = ingest.get(f"{SESSIONS}/séance-東京").json()
    assert (body["search_query"], body["search_meta"]) == ("película 映画", {"ü": "ß"})

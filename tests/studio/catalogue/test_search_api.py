"""studio.catalogue.search_api (``POST /api/v1/search``): input checks, response shape, personalization, tracking."""

from __future__ import annotations

import json
import math

import pytest

from clickstream import services as clickstream_services
from clickstream.models import Session
from studio.catalogue import embedding, search
from tests.studio.catalogue.support import at_angle, make_copy, make_object
from tests.support import unit_vector

URL = "/api/v1/search"


@pytest.fixture
def client(make_client):
    return make_client("search")


@pytest.fixture
def catalogue(db):
    """Five originals at 0°, 10°, … 40° and one far at 90° (with a payload genre)."""
    objects = {
        f"a{angle}": make_object(f"a{angle}", at_angle(angle), payload={"genre": "x" if angle % 20 else "y"})
        for angle in (0, 10, 20, 30, 40)
    }
    objects["far"] = make_object("far", at_angle(90), payload={"genre": "x"})
    return objects


def post(client, body: dict, **kwargs):
    return client.post(URL, body, format="json", **kwargs)


def error_fields(response) -> set[str]:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"])
    return set(body["error"]["fields"])


# --- responses and tracking --------------------------------------------------------------------


def test_vector_search_returns_ranked_results_and_tracks_them(client, catalogue):
    response = post(client, {"query_vector": at_angle(0), "limit": 3, "user_id": "bob"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [(r["rank"], r["object_id"], r["personalized"]) for r in body["results"]] == [
        (1, "a0", False),
        (2, "a10", False),
        (3, "a20", False),
    ]
    first, second = body["results"][0], body["results"][1]
    assert first["payload"] == {"genre": "y"}
    assert first["distance"] == pytest.approx(0.0, abs=1e-6) and first["score"] == pytest.approx(1.0)
    assert second["score"] == pytest.approx(math.cos(math.radians(10)), abs=1e-6)

    session = Session.objects.get(session_id=body["session_id"])
    assert session.user_id == "bob" and session.search_query == ""
    assert list(session.query_vector) == pytest.approx(at_angle(0))
    shown = list(session.results.order_by("position").values_list("position", "object_id", "score"))
    assert [(p, o) for p, o, _ in shown] == [(0, "a0"), (1, "a10"), (2, "a20")]
    assert [s for _, _, s in shown] == pytest.approx([r["score"] for r in body["results"]])
    meta = session.search_meta
    assert meta["metric"] == "cosine" and meta["limit"] == 3 and meta["offset"] == 0
    assert meta["ef_search"] >= 40 and meta["personalized_count"] == 0 and "exact" in meta
    assert meta["query_source"] == "vector"


def test_tracked_session_holds_a_personalized_page_in_order(client, catalogue):
    make_copy(catalogue["far"], "alice", at_angle(15))
    response = post(client, {"query_vector": at_angle(0), "user_id": "alice", "limit": 3, "offset": 1})
    assert response.status_code == 200
    body = response.json()
    assert [(r["rank"], r["object_id"], r["personalized"]) for r in body["results"]] == [
        (2, "a10", False),
        (3, "far", True),
        (4, "a20", False),
    ]
    session = Session.objects.get(session_id=body["session_id"])
    shown = list(session.results.order_by("position").values_list("position", "object_id", "meta"))
    assert [(p, o) for p, o, _ in shown] == [(0, "a10"), (1, "far"), (2, "a20")]
    assert shown[1][2]["personalized"] is True and shown[1][2]["rank"] == 3
    assert session.search_meta["personalized_count"] == 1 and session.search_meta["offset"] == 1


def test_client_session_id_is_used_and_an_identical_replay_is_accepted(client, catalogue):
    body = {"query_vector": at_angle(5), "limit": 2, "session_id": "my-session-1"}
    first = post(client, body)
    assert first.status_code == 200 and first.json()["session_id"] == "my-session-1"
    again = post(client, body)
    assert again.status_code == 200 and again.json() == first.json()
    assert Session.objects.filter(session_id="my-session-1").count() == 1


def test_session_id_collision_is_409_and_registers_nothing(client, catalogue):
    clickstream_services.register_session(
        session_id="taken",
        user_id="someone",
        search_query="other",
        query_vector=None,
        results=[clickstream_services.ShownResultInput(object_id="a40")],
    )
    response = post(client, {"query_vector": at_angle(0), "session_id": "taken"})
    assert response.status_code == 409
    assert error_fields(response) == {"session_id"}
    session = Session.objects.get(session_id="taken")
    assert session.search_query == "other"
    assert list(session.results.values_list("object_id", flat=True)) == ["a40"]
    assert Session.objects.count() == 1


def test_untracked_search_registers_nothing(client, catalogue):
    response = post(client, {"query_vector": at_angle(0), "track": False})
    assert response.status_code == 200
    assert response.json()["session_id"] is None and len(response.json()["results"]) == 6
    assert Session.objects.count() == 0


def test_anonymous_search_never_sees_copies(client, catalogue):
    make_copy(catalogue["far"], "alice", at_angle(1))
    anonymous = post(client, {"query_vector": at_angle(0), "limit": 100, "track": False}).json()["results"]
    assert [r["object_id"] for r in anonymous][-1] == "far"
    assert not any(r["personalized"] for r in anonymous)
    other = post(client, {"query_vector": at_angle(0), "limit": 100, "user_id": "bob", "track": False})
    assert other.json()["results"] == anonymous


def test_filter_through_the_api(client, catalogue):
    response = post(client, {"query_vector": at_angle(0), "filter": {"genre": "x"}, "track": False})
    assert [r["object_id"] for r in response.json()["results"]] == ["a10", "a30", "far"]


def test_text_query_is_embedded_and_recorded(client, db):
    titles = ["a space adventure among the stars", "a cooking show about pasta", "a romantic comedy in Paris"]
    for title, vector in zip(titles, embedding.embed_texts(titles), strict=True):
        make_object(title, vector.tolist())
    response = post(client, {"query": "rockets and astronauts in outer space", "limit": 3})
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["object_id"] == titles[0]
    expected = search.search_objects(query_vector=embedding.embed_text("rockets and astronauts in outer space"))
    assert [r["object_id"] for r in results] == [h.object_id for h in expected.hits]
    session = Session.objects.get(session_id=response.json()["session_id"])
    assert session.search_query == "rockets and astronauts in outer space"
    assert session.query_vector is not None and session.search_meta["query_source"] == "text"


def test_text_query_without_embedder_names_the_field(client, catalogue, settings):
    settings.STUDIO_EMBEDDER = "none"
    response = post(client, {"query": "anything"})
    assert response.status_code == 400
    assert error_fields(response) == {"query"}
    assert response.json()["error"]["code"] == "embedder_disabled"
    assert Session.objects.count() == 0


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": "", "query_vector": None}, "query"),
        ({"query_vector": [1.0, 0.0]}, "query_vector"),
        ({"query_vector": "not a list"}, "query_vector"),
        ({"query_vector": unit_vector(1.0)[:-1] + ["x"]}, "query_vector"),
        ({"query_vector": unit_vector(1.0), "limit": 0}, "limit"),
        ({"query_vector": unit_vector(1.0), "limit": 101}, "limit"),
        ({"query_vector": unit_vector(1.0), "limit": "ten"}, "limit"),
        ({"query_vector": unit_vector(1.0), "offset": -1}, "offset"),
        ({"query_vector": unit_vector(1.0), "offset": search.MAX_OFFSET + 1}, "offset"),
        ({"query_vector": unit_vector(1.0), "filter": {"genre": {"nested": 1}}}, "filter"),
        ({"query_vector": unit_vector(1.0), "filter": {"genre": ["a", "b"]}}, "filter"),
        ({"query_vector": unit_vector(1.0), "filter": ["genre"]}, "filter"),
        ({"query_vector": unit_vector(1.0), "filter": "genre=x"}, "filter"),
        ({"query_vector": unit_vector(1.0), "session_id": "a/b"}, "session_id"),
        ({"query_vector": unit_vector(1.0), "session_id": "x" * 257}, "session_id"),
        ({"query_vector": unit_vector(1.0), "user_id": ""}, "user_id"),
        ({"query_vector": unit_vector(1.0), "user_id": "u" * 257}, "user_id"),
        ({"query_vector": unit_vector(1.0), "surprise": 1}, "surprise"),
        ({"query": ""}, "query"),
        # Vectors pgvector cannot rank in float4: zero after the cast (cosine), or overflowing squared length.
        ({"query_vector": [1e-300] * 384}, "query_vector"),
        ({"query_vector": [1e-46] * 384, "track": False}, "query_vector"),
        ({"query_vector": [1e-40] * 384}, "query_vector"),
        ({"query_vector": [1e20] * 384}, "query_vector"),
        # Ids are taken verbatim everywhere: surrounding whitespace is refused, not trimmed.
        ({"query_vector": unit_vector(1.0), "user_id": " u1"}, "user_id"),
        ({"query_vector": unit_vector(1.0), "session_id": "s1 "}, "session_id"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_registers_nothing(client, catalogue, body, field):
    response = post(client, body)
    assert response.status_code == 400, response.content
    assert field in error_fields(response)
    assert Session.objects.count() == 0


def test_neither_query_field_names_both(client, catalogue):
    assert error_fields(post(client, {"limit": 5})) == {"query", "query_vector"}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e400"])
def test_non_finite_vector_is_400(client, catalogue, literal):
    raw = json.dumps({"query_vector": unit_vector(1.0)}).replace("1.0", literal, 1)
    response = client.post(URL, raw, content_type="application/json")
    assert response.status_code == 400
    assert Session.objects.count() == 0


def test_search_needs_a_key_with_the_search_scope(make_client, catalogue):
    from rest_framework.test import APIClient

    assert post(APIClient(), {"query_vector": at_angle(0)}).status_code == 401
    assert post(make_client("ingest", "catalog"), {"query_vector": at_angle(0)}).status_code == 403
    assert Session.objects.count() == 0

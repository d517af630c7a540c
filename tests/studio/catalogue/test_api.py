"""studio.catalogue.api against the real database: upsert, read, delete, and every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.db import connection

from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart
from tests.support import unit_vector

DIM = 384


def post_objects(client, objects, **extra):
    return client.post("/api/v1/objects", {"objects": objects}, format="json", **extra)


def post_raw(client, body: str, content_type: str = "application/json", **extra):
    return client.generic("POST", "/api/v1/objects", body, content_type=content_type, **extra)


def random_vector(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).standard_normal(DIM)
    return (vector / np.linalg.norm(vector)).tolist()


def assert_error_shape(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"code", "message", "fields"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


def add_copy(obj: Object, user_id: str, vector: list[float]) -> PersonalizedObject:
    copy = PersonalizedObject.objects.create(original=obj, user_id=user_id, object_id=f"{obj.object_id}_{user_id}")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=vector)
    return copy


def catalogue_snapshot() -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT object_id, payload::text, text FROM studio_object ORDER BY object_id")
        objects = cursor.fetchall()
        cursor.execute(
            "SELECT o.object_id, p.index, p.vector::text, p.is_average FROM studio_objectpart p "
            "JOIN studio_object o ON o.id = p.object_id ORDER BY 1, 2"
        )
        return objects, cursor.fetchall()


# --- upsert -------------------------------------------------------------------------


def test_insert_with_vector_and_read_back(catalog_client):
    vector = random_vector(1)
    response = post_objects(catalog_client, [{"object_id": "a", "payload": {"title": "A", "n": 1}, "vector": vector}])
    assert response.status_code == 200, response.content
    assert response.json() == {"upserted": 1, "errors": []}

    obj = Object.objects.get(object_id="a")
    assert obj.payload == {"title": "A", "n": 1}
    parts = list(obj.parts.order_by("index"))
    assert [(p.index, p.is_average) for p in parts] == [(0, False)]
    assert np.allclose(parts[0].vector, vector, atol=1e-6)

    got = catalog_client.get("/api/v1/objects/a")
    assert got.status_code == 200
    body = got.json()
    assert body["object_id"] == "a" and body["payload"] == {"title": "A", "n": 1}
    assert body["parts"] == 1 and body["personalized_copies"] == 0
    assert "vectors" not in body

    with_vectors = catalog_client.get("/api/v1/objects/a?vectors=1").json()
    assert len(with_vectors["vectors"]) == 1
    assert with_vectors["vectors"][0]["index"] == 0 and with_vectors["vectors"][0]["is_average"] is False
    assert np.allclose(with_vectors["vectors"][0]["vector"], vector, atol=1e-6)


def test_reupsert_replaces_parts_payload_and_drops_copies(catalog_client, settings):
    settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE = True
    first = [random_vector(2), random_vector(3), random_vector(4)]
    assert post_objects(catalog_client, [{"object_id": "x", "payload": {"v": 1}, "vectors": first}]).status_code == 200
    obj = Object.objects.get(object_id="x")
    created_at = obj.created_at
    add_copy(obj, "u1", first[0])
    add_copy(obj, "u2", first[1])

    second = random_vector(5)
    response = post_objects(catalog_client, [{"object_id": "x", "payload": {"v": 2}, "vector": second}])
    assert response.json() == {"upserted": 1, "errors": []}

    obj.refresh_from_db()
    assert obj.payload == {"v": 2}
    assert obj.created_at == created_at and obj.updated_at > created_at
    assert Object.objects.count() == 1
    parts = list(ObjectPart.objects.filter(object=obj))
    assert len(parts) == 1 and np.allclose(parts[0].vector, second, atol=1e-6)
    assert PersonalizedObject.objects.count() == 0
    assert PersonalizedPart.objects.count() == 0


def test_reupsert_keeps_copies_when_setting_off(catalog_client, settings):
    settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE = False
    post_objects(catalog_client, [{"object_id": "x", "vector": random_vector(6)}])
    obj = Object.objects.get(object_id="x")
    add_copy(obj, "u1", random_vector(7))

    assert post_objects(catalog_client, [{"object_id": "x", "vector": random_vector(8)}]).status_code == 200
    assert PersonalizedObject.objects.filter(original=obj, user_id="u1").count() == 1
    assert PersonalizedPart.objects.filter(personalized__original=obj).count() == 1
    assert catalog_client.get("/api/v1/objects/x").json()["personalized_copies"] == 1


def test_text_is_embedded(catalog_client):
    from studio.catalogue.embedding import embed_text

    response = post_objects(catalog_client, [{"object_id": "t", "text": "A quiet film about the sea."}])
    assert response.status_code == 200, response.content
    parts = list(ObjectPart.objects.filter(object__object_id="t"))
    assert len(parts) == 1 and not parts[0].is_average
    vector = np.asarray(parts[0].vector)
    assert vector.shape == (DIM,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(vector, embed_text("A quiet film about the sea."), atol=1e-5)
    assert Object.objects.get(object_id="t").text == "A quiet film about the sea."


def test_long_text_splits_into_parts_and_an_average(catalog_client, settings):
    settings.STUDIO_EMBEDDER_MAX_WORDS = 10
    text = " ".join(f"word{i}" for i in range(25))  # 3 chunks: 10 + 10 + 5 words
    assert post_objects(catalog_client, [{"object_id": "long", "text": text}]).status_code == 200
    parts = list(ObjectPart.objects.filter(object__object_id="long").order_by("index"))
    assert [p.is_average for p in parts] == [False, False, False, True]
    chunks = np.asarray([p.vector for p in parts[:3]])
    mean = chunks.mean(axis=0)
    assert np.allclose(parts[3].vector, mean / np.linalg.norm(mean), atol=1e-5)
    assert len({tuple(np.round(c, 4)) for c in chunks}) == 3  # three different chunks


def test_vectors_with_average(catalog_client):
    vectors = [random_vector(10), random_vector(11)]
    response = post_objects(catalog_client, [{"object_id": "m", "vectors": vectors, "average": True}])
    assert response.status_code == 200, response.content
    body = catalog_client.get("/api/v1/objects/m?vectors=true").json()
    assert [(v["index"], v["is_average"]) for v in body["vectors"]] == [(0, False), (1, False), (2, True)]
    mean = np.mean(vectors, axis=0)
    assert np.allclose(body["vectors"][2]["vector"], mean / np.linalg.norm(mean), atol=1e-5)
    assert np.allclose(body["vectors"][1]["vector"], vectors[1], atol=1e-6)


def test_vectors_without_average_store_only_given_parts(catalog_client):
    post_objects(catalog_client, [{"object_id": "m", "vectors": [random_vector(12), random_vector(13)]}])
    assert list(ObjectPart.objects.filter(object__object_id="m").values_list("is_average", flat=True)) == [
        False,
        False,
    ]


def test_payload_null_means_empty_and_object_id_with_slash(catalog_client):
    response = post_objects(catalog_client, [{"object_id": "shop/item 1", "payload": None, "vector": random_vector(1)}])
    assert response.status_code == 200
    body = catalog_client.get("/api/v1/objects/shop/item 1").json()
    assert body["object_id"] == "shop/item 1" and body["payload"] == {}


def test_large_batch_of_max_items(catalog_client, settings):
    settings.STUDIO_MAX_OBJECTS_PER_REQUEST = 300
    objects = [{"object_id": f"o{i}", "vector": unit_vector(1.0, float(i))} for i in range(300)]
    assert post_objects(catalog_client, objects).json() == {"upserted": 300, "errors": []}
    assert ObjectPart.objects.count() == 300


# --- delete -------------------------------------------------------------------------


def test_delete_removes_parts_and_copies(catalog_client):
    post_objects(catalog_client, [{"object_id": "d", "vectors": [random_vector(1), random_vector(2)]}])
    post_objects(catalog_client, [{"object_id": "keep", "vector": random_vector(3)}])
    obj = Object.objects.get(object_id="d")
    add_copy(obj, "u1", random_vector(4))
    add_copy(obj, "u2", random_vector(5))
    keep_copy = add_copy(Object.objects.get(object_id="keep"), "u1", random_vector(6))

    response = catalog_client.delete("/api/v1/objects/d")
    assert response.status_code == 200
    assert response.json() == {"deleted": 1, "personalized_deleted": 2}
    assert not Object.objects.filter(object_id="d").exists()
    assert not ObjectPart.objects.filter(object_id=obj.pk).exists()
    assert list(PersonalizedObject.objects.all()) == [keep_copy]
    assert PersonalizedPart.objects.count() == 1
    assert ObjectPart.objects.filter(object__object_id="keep").count() == 1

    assert_error_shape(catalog_client.get("/api/v1/objects/d"), 404, "not_found")


def test_delete_and_get_unknown_are_404(catalog_client):
    assert_error_shape(catalog_client.delete("/api/v1/objects/nope"), 404, "not_found")
    assert_error_shape(catalog_client.get("/api/v1/objects/nope"), 404, "not_found")


# --- bad input: whole request ---------------------------------------------------------


def test_malformed_json(catalog_client):
    body = assert_error_shape(post_raw(catalog_client, '{"objects": [{"object_id": "a",'), 400, "parse_error")
    assert "JSON" in body["error"]["message"]
    assert Object.objects.count() == 0


def test_deeply_nested_json_is_400_not_500(catalog_client):
    assert_error_shape(post_raw(catalog_client, "[" * 100_000 + "]" * 100_000), 400, "parse_error")


def test_invalid_utf8_is_400(catalog_client):
    response = catalog_client.generic("POST", "/api/v1/objects", b'{"objects": "\xff\xfe"}', "application/json")
    assert_error_shape(response, 400, "parse_error")


@pytest.mark.parametrize(
    "body",
    ["[]", '"objects"', "42", "null", '{"objects": []}', '{"objects": {}}', '{"objects": null}', "{}"],
)
def test_envelope_not_an_object_or_no_items(catalog_client, body):
    response = assert_error_shape(post_raw(catalog_client, body), 400, "invalid")
    assert response["error"]["fields"]


def test_unknown_envelope_field(catalog_client):
    body = post_raw(catalog_client, json.dumps({"objects": [{"object_id": "a", "vector": random_vector(1)}], "x": 1}))
    body = assert_error_shape(body, 400, "invalid")
    assert body["error"]["fields"] == {"x": ["Unknown field."]}
    assert "x" in body["error"]["message"]
    assert Object.objects.count() == 0


def test_too_many_items_is_413(catalog_client, settings):
    settings.STUDIO_MAX_OBJECTS_PER_REQUEST = 3
    objects = [{"object_id": f"o{i}", "vector": unit_vector(1.0)} for i in range(4)]
    body = assert_error_shape(post_objects(catalog_client, objects), 413, "too_many_items")
    assert "objects" in body["error"]["fields"]
    assert Object.objects.count() == 0


def test_oversize_body_is_413_before_reading(catalog_client, settings):
    settings.STUDIO_MAX_BODY_BYTES = 1000
    objects = [{"object_id": "big", "vector": random_vector(1)}]  # ~8 KB of JSON
    body = assert_error_shape(post_objects(catalog_client, objects), 413, "payload_too_large")
    assert "1000" in body["error"]["message"]
    assert Object.objects.count() == 0


def test_content_length_over_limit_is_413(catalog_client, settings):
    settings.STUDIO_MAX_BODY_BYTES = 1000
    response = post_raw(catalog_client, "{}", CONTENT_LENGTH="5000")
    assert_error_shape(response, 413, "payload_too_large")


def test_a_chunked_body_is_refused_with_411_not_read_as_empty(catalog_client):
    # gunicorn passes a chunked request on without Content-Length; Django would read its body as empty.
    response = post_raw(catalog_client, '{"objects": []}', HTTP_TRANSFER_ENCODING="chunked")
    assert_error_shape(response, 411, "length_required")


def test_bad_content_length_is_400(catalog_client):
    assert_error_shape(post_raw(catalog_client, "{}", CONTENT_LENGTH="abc"), 400, "invalid_content_length")


def test_not_json_content_type_is_415(catalog_client):
    response = post_raw(catalog_client, "objects=1", content_type="application/x-www-form-urlencoded")
    assert_error_shape(response, 415, "unsupported_media_type")
    response = post_raw(catalog_client, '{"objects": []}', content_type="text/plain")
    assert_error_shape(response, 415, "unsupported_media_type")


def test_wrong_method_is_405_json(catalog_client):
    assert_error_shape(catalog_client.get("/api/v1/objects"), 405, "method_not_allowed")
    assert_error_shape(catalog_client.put("/api/v1/objects/a", {}, format="json"), 405, "method_not_allowed")


def test_unknown_api_url_is_json_404(catalog_client):
    assert_error_shape(catalog_client.get("/api/v1/no-such-endpoint"), 404, "not_found")
    assert_error_shape(catalog_client.get("/api/v1/objects/"), 404, "not_found")


def test_json_nan_token_is_refused(catalog_client):
    vector = json.dumps(unit_vector(1.0)).replace("1.0", "NaN", 1)
    body = f'{{"objects": [{{"object_id": "n", "vector": {vector}}}]}}'
    assert_error_shape(post_raw(catalog_client, body), 400, "parse_error")
    assert Object.objects.count() == 0


# --- bad input: per item --------------------------------------------------------------


def item_errors(response) -> list[dict]:
    assert response.status_code in (200, 400), response.content
    return response.json()["errors"]


BAD_ITEMS = [
    ({"object_id": "a", "vector": [0.1] * 10}, "invalid_vector", "384"),
    ({"object_id": "a", "vector": [0.1] * 385}, "invalid_vector", "385"),
    ({"object_id": "a", "vector": ["0.1"] * 384}, "invalid_vector", "number"),
    ({"object_id": "a", "vector": [True] * 384}, "invalid_vector", "number"),
    ({"object_id": "a", "vector": [None] * 384}, "invalid_vector", "number"),
    ({"object_id": "a", "vector": [[0.1]] * 384}, "invalid_vector", "number"),
    ({"object_id": "a", "vector": "0.1,0.2"}, "invalid_vector", "list"),
    ({"object_id": "a", "vector": {"x": 1}}, "invalid_vector", "list"),
    ({"object_id": "a", "vector": [1e39] + [0.0] * 383}, "invalid_vector", "32-bit"),
    ({"object_id": "a", "vector": [10**400] + [0] * 383}, "invalid_vector", "vector"),
    ({"object_id": "a", "vectors": []}, "invalid_vector", "vectors"),
    ({"object_id": "a", "vectors": "x"}, "invalid_vector", "vectors"),
    ({"object_id": "a", "vectors": [[0.1] * 384, [0.1] * 3]}, "invalid_vector", "vectors[1]"),
    ({"object_id": "a", "vector": [0.1] * 384, "vectors": [[0.1] * 384]}, "invalid", "either"),
    ({"object_id": "a", "vectors": [[0.1] * 384], "average": "yes"}, "invalid", "average"),
    ({"object_id": "a"}, "missing_vector", "text"),
    ({"object_id": "a", "text": "   "}, "missing_vector", "text"),
    ({"object_id": "a", "text": 5}, "invalid_text", "text"),
    ({"object_id": "a", "text": "nul\u0000inside"}, "invalid_text", "NUL"),
    ({"object_id": "a", "text": "\ud800 lone surrogate"}, "invalid_text", "surrogate"),
    ({"vector": [0.1] * 384}, "invalid_object_id", "object_id"),
    ({"object_id": "", "vector": [0.1] * 384}, "invalid_object_id", "object_id"),
    ({"object_id": 7, "vector": [0.1] * 384}, "invalid_object_id", "object_id"),
    ({"object_id": "x" * 257, "vector": [0.1] * 384}, "invalid_object_id", "256"),
    ({"object_id": "a\u0000b", "vector": [0.1] * 384}, "invalid_object_id", "NUL"),
    ({"object_id": "a", "payload": [1, 2], "vector": [0.1] * 384}, "invalid_payload", "payload"),
    ({"object_id": "a", "payload": "s", "vector": [0.1] * 384}, "invalid_payload", "payload"),
    ({"object_id": "a", "payload": {"k": "a\u0000b"}, "vector": [0.1] * 384}, "invalid_payload", "NUL"),
    ({"object_id": "a", "payload": {"k": "__HUGE__"}, "vector": [0.1] * 384}, "invalid_payload", "Infinity"),
    ({"object_id": "a", "payload": {"k": "\udc00"}, "vector": [0.1] * 384}, "invalid_payload", "surrogate"),
    ({"object_id": "a", "colour": "red", "vector": [0.1] * 384}, "unknown_field", "colour"),
    # What pgvector cannot rank in float4 (STUDIO_METRIC cosine in the suite): zero after the cast, a zero
    # average of the parts, a squared length that overflows.
    ({"object_id": "a", "vector": [1e-40] * 384}, "zero_vector", "32-bit"),
    ({"object_id": "a", "vectors": [[0.1] * 384, [-0.1] * 384], "average": True}, "zero_vector", "average"),
    ({"object_id": "a", "vector": [1e20] * 384}, "invalid_vector", "overflows"),
    ({"object_id": " a", "vector": [0.1] * 384}, "invalid_object_id", "whitespace"),
    ("not an object", "invalid", "object"),
    ([1, 2], "invalid", "object"),
    (None, "invalid", "object"),
]


BAD_ITEM_IDS = [f"{i}-{code}" for i, (_, code, _) in enumerate(BAD_ITEMS)]


@pytest.mark.parametrize(("item", "code", "needle"), BAD_ITEMS, ids=BAD_ITEM_IDS)
def test_bad_item_is_reported_and_good_item_written(catalog_client, item, code, needle):
    before = catalogue_snapshot()
    good = {"object_id": "good", "vector": random_vector(99)}
    # Serialize by hand: lone surrogates and huge ints must reach the server as the client sent them.
    body = json.dumps({"objects": [good, item]}).replace('"__HUGE__"', "1e999")  # parses as inf
    response = post_raw(catalog_client, body)
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["upserted"] == 1
    assert len(result["errors"]) == 1
    error = result["errors"][0]
    assert set(error) == {"index", "object_id", "code", "message"}
    assert error["index"] == 1
    assert error["code"] == code, error
    assert needle.lower() in error["message"].lower(), error
    shown = item.get("object_id") if isinstance(item, dict) else None
    if isinstance(shown, str) and "\u0000" not in shown:
        assert error["object_id"] == shown
    else:
        assert error["object_id"] is None
    # Only the good item changed the catalogue.
    objects, parts = catalogue_snapshot()
    assert [row[0] for row in objects] == sorted([row[0] for row in before[0]] + ["good"])
    assert len(parts) == len(before[1]) + 1


def test_huge_number_in_vector_is_reported_per_item(catalog_client):
    vector = json.dumps(unit_vector(1.0)).replace("1.0", "1e999", 1)
    good = json.dumps(random_vector(1))
    body = f'{{"objects": [{{"object_id": "inf", "vector": {vector}}}, {{"object_id": "ok", "vector": {good}}}]}}'
    result = post_raw(catalog_client, body).json()
    assert result["upserted"] == 1
    assert result["errors"][0]["code"] == "invalid_vector"
    assert "Infinity" in result["errors"][0]["message"]
    assert list(Object.objects.values_list("object_id", flat=True)) == ["ok"]


def test_payload_too_large(catalog_client, settings):
    settings.STUDIO_MAX_PAYLOAD_BYTES = 100
    errors = item_errors(
        post_objects(
            catalog_client,
            [
                {"object_id": "big", "payload": {"k": "é" * 60}, "vector": random_vector(1)},  # 120 bytes in UTF-8
                {"object_id": "small", "payload": {"k": "x"}, "vector": random_vector(2)},
            ],
        )
    )
    assert [(e["index"], e["code"]) for e in errors] == [(0, "payload_too_large")]
    assert list(Object.objects.values_list("object_id", flat=True)) == ["small"]


def test_too_many_parts(catalog_client, settings):
    settings.STUDIO_MAX_PARTS_PER_OBJECT = 3
    errors = item_errors(
        post_objects(
            catalog_client,
            [
                {"object_id": "four", "vectors": [unit_vector(1.0)] * 4},
                {"object_id": "three+avg", "vectors": [unit_vector(1.0)] * 3, "average": True},
                {"object_id": "three", "vectors": [unit_vector(1.0)] * 3},
            ],
        )
    )
    assert [(e["index"], e["code"]) for e in errors] == [(0, "too_many_parts"), (1, "too_many_parts")]
    assert ObjectPart.objects.filter(object__object_id="three").count() == 3


def test_text_too_long(catalog_client, settings):
    settings.STUDIO_MAX_TEXT_CHARS = 50
    errors = item_errors(post_objects(catalog_client, [{"object_id": "t", "text": "word " * 20}]))
    assert errors[0]["code"] == "text_too_long" and "text" in errors[0]["message"]


def test_text_needing_too_many_parts(catalog_client, settings):
    settings.STUDIO_MAX_PARTS_PER_OBJECT = 3
    settings.STUDIO_EMBEDDER_MAX_WORDS = 2
    errors = item_errors(post_objects(catalog_client, [{"object_id": "t", "text": "one two three four five"}]))
    assert errors[0]["code"] == "text_too_long"
    assert Object.objects.count() == 0


def test_duplicate_object_id_in_one_request(catalog_client):
    first, second = random_vector(1), random_vector(2)
    result = post_objects(
        catalog_client,
        [{"object_id": "dup", "vector": first}, {"object_id": "dup", "vector": second}],
    ).json()
    assert result["upserted"] == 1
    assert result["errors"] == [
        {
            "index": 1,
            "object_id": "dup",
            "code": "duplicate_object_id",
            "message": "object_id: repeats item 0 of this request",
        }
    ]
    part = ObjectPart.objects.get(object__object_id="dup")
    assert np.allclose(part.vector, first, atol=1e-6)


def test_mixed_batch_writes_good_reports_bad_leaves_rest_unchanged(catalog_client):
    post_objects(catalog_client, [{"object_id": "existing", "payload": {"v": 1}, "vector": random_vector(1)}])
    before = catalogue_snapshot()
    result = post_objects(
        catalog_client,
        [
            {"object_id": "g1", "vector": random_vector(2)},
            {"object_id": "existing", "payload": {"v": 2}, "vector": [0.1] * 3},
            {"object_id": "g2", "vectors": [random_vector(3), random_vector(4)]},
            {"object_id": "b2", "vector": random_vector(5), "extra": 1},
        ],
    ).json()
    assert result["upserted"] == 2
    assert [(e["index"], e["object_id"], e["code"]) for e in result["errors"]] == [
        (1, "existing", "invalid_vector"),
        (3, "b2", "unknown_field"),
    ]
    objects, parts = catalogue_snapshot()
    assert [o[0] for o in objects] == ["existing", "g1", "g2"]
    assert [o for o in objects if o[0] == "existing"] == [o for o in before[0] if o[0] == "existing"]
    assert [p for p in parts if p[0] == "existing"] == [p for p in before[1] if p[0] == "existing"]
    assert len(parts) == 1 + 1 + 2


def test_all_items_bad_is_400_with_error_shape_and_items(catalog_client):
    response = post_objects(
        catalog_client, [{"object_id": "a", "vector": [1.0]}, {"object_id": "b", "text": None, "vector": None}]
    )
    body = assert_error_shape(response, 400, "invalid")
    assert body["upserted"] == 0
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(0, "invalid_vector"), (1, "missing_vector")]
    assert set(body["error"]["fields"]["objects"]) == {"0", "1"}
    assert "objects[0]" in body["error"]["message"]
    assert Object.objects.count() == 0


def test_embedder_none_refuses_text_per_item(catalog_client, settings):
    settings.STUDIO_EMBEDDER = "none"
    result = post_objects(
        catalog_client,
        [{"object_id": "t", "text": "some words"}, {"object_id": "v", "vector": random_vector(1)}],
    ).json()
    assert result["upserted"] == 1
    assert result["errors"][0]["code"] == "embedder_disabled"
    assert "STUDIO_EMBEDDER=none" in result["errors"][0]["message"]
    assert "vector" in result["errors"][0]["message"]
    assert list(Object.objects.values_list("object_id", flat=True)) == ["v"]


def test_an_unexpected_crash_is_a_json_500(catalog_client, monkeypatch):
    from studio.catalogue import selectors

    def crash(**kwargs):
        raise ValueError("bug")

    monkeypatch.setattr(selectors, "get_object", crash)
    catalog_client.raise_request_exception = False
    body = assert_error_shape(catalog_client.get("/api/v1/objects/a"), 500, "internal_error")
    assert "bug" not in body["error"]["message"]  # internals are logged, not shown

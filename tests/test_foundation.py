"""Foundation against the real database: constraints, embedder, HNSW use, management commands,
health, schema, docs and admin pages."""

from __future__ import annotations

import io
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from studio.catalogue import embedding, services
from studio.console import health
from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart
from tests.conftest import unit_vector

DIM = 384


def random_unit(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_object(object_id: str, *vectors: list[float]) -> Object:
    obj = Object.objects.create(object_id=object_id)
    for index, vector in enumerate(vectors or [unit_vector(1.0)]):
        ObjectPart.objects.create(object=obj, index=index, vector=vector)
    return obj


def hnsw_index_definition() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [services.HNSW_INDEX_NAME])
        row = cursor.fetchone()
    return row[0] if row else None


# --- models and constraints ---------------------------------------------------------


def test_object_id_is_unique(db):
    Object.objects.create(object_id="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Object.objects.create(object_id="a")


def test_part_index_is_unique_per_object(db):
    obj = make_object("a")
    make_object("b")  # index 0 of another object is fine
    with pytest.raises(IntegrityError), transaction.atomic():
        ObjectPart.objects.create(object=obj, index=0, vector=unit_vector(0.0, 1.0))


def test_personalized_copy_is_unique_per_user(db):
    obj = make_object("a")
    PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedObject.objects.create(original=obj, user_id="v", object_id="a_v")
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")


def test_personalized_part_index_unique_and_drift_nonnegative(db):
    copy = PersonalizedObject.objects.create(original=make_object("a"), user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonalizedObject.objects.filter(pk=copy.pk).update(drift=-0.1)


def test_vector_dimension_is_enforced_by_the_database(db):
    obj = Object.objects.create(object_id="a")
    with pytest.raises(DataError), transaction.atomic():
        ObjectPart.objects.create(object=obj, index=0, vector=[1.0, 2.0, 3.0])


def test_personalized_index_on_user_and_no_ann_index_on_copies(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'studio_personalizedobject'")
        copies = dict(cursor.fetchall())
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'studio_personalizedpart'")
        part_indexes = [row[0] for row in cursor.fetchall()]
    assert "(user_id)" in copies["personalized_user_idx"]
    assert not any("hnsw" in definition or "ivfflat" in definition for definition in part_indexes)


def test_hnsw_index_follows_metric_and_parameters(db, settings):
    definition = hnsw_index_definition()
    opclass = services.HNSW_OPCLASS[settings.STUDIO_METRIC]
    assert definition is not None
    assert "USING hnsw" in definition and opclass in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition


# --- services -----------------------------------------------------------------------


def test_upsert_service_sorts_locks_and_accepts_arrays(db):
    rng = np.random.default_rng(0)
    vectors = random_unit(rng, 3)
    written = services.upsert_objects(
        items=[
            services.ObjectInput(object_id="z", vectors=[vectors[0]]),
            services.ObjectInput(object_id="a", vectors=[vectors[1].tolist(), vectors[2]], add_average=True),
        ]
    )
    assert written == 2
    parts = {(p.object.object_id, p.index): p for p in ObjectPart.objects.select_related("object")}
    assert sorted(parts) == [("a", 0), ("a", 1), ("a", 2), ("z", 0)]
    assert parts[("a", 2)].is_average and not parts[("a", 1)].is_average
    assert np.allclose(parts[("z", 0)].vector, vectors[0])
    assert services.upsert_objects(items=[]) == 0


def test_overlapping_upserts_in_opposite_orders_do_not_deadlock(transactional_db):
    import threading

    from django.db import connections

    rng = np.random.default_rng(4)
    vectors = random_unit(rng, 40)
    ids = [f"c{i:02d}" for i in range(40)]
    failures: list[BaseException] = []

    def upsert(order: list[int]) -> None:
        try:
            items = [services.ObjectInput(object_id=ids[i], vectors=[vectors[i]]) for i in order]
            for _ in range(5):
                services.upsert_objects(items=items)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upsert, args=(order,)) for order in (list(range(40)), list(range(39, -1, -1)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert Object.objects.count() == 40 and ObjectPart.objects.count() == 40


def test_copy_objects_in_an_outer_transaction_with_many_batches(db):
    """Batches share one transaction here (as in any caller's atomic block): nothing may pile up."""
    rng = np.random.default_rng(1)
    vectors = random_unit(rng, 7)
    rows = [(f"o{i}", {"i": i}, "", [vectors[i]]) for i in range(5)]
    rows.append(("o0", {"i": "again"}, "t", [vectors[5], vectors[6], vectors[5]], [False, False, True]))
    batches = []
    with transaction.atomic():
        loaded = services.copy_objects(rows=iter(rows), batch_size=2, on_batch=batches.append)
    assert loaded == 6 and batches == [2, 2, 2]
    assert Object.objects.count() == 5
    again = Object.objects.get(object_id="o0")
    assert again.payload == {"i": "again"} and again.text == "t"
    assert [(p.index, p.is_average) for p in again.parts.order_by("index")] == [(0, False), (1, False), (2, True)]
    assert ObjectPart.objects.count() == 4 + 3


def test_copy_objects_replaces_and_drops_copies_with_their_parts(db, settings):
    settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE = True
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # foreign keys are checked now, not at a commit
    obj = make_object("a")
    copy = PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    services.copy_objects(rows=[("a", {}, "", [unit_vector(0.0, 1.0)])])
    assert PersonalizedObject.objects.count() == 0 and PersonalizedPart.objects.count() == 0
    assert [list(p.vector[:2]) for p in ObjectPart.objects.all()] == [[0.0, 1.0]]


def test_delete_object_service(db):
    obj = make_object("a", unit_vector(1.0), unit_vector(0.0, 1.0))
    copy = PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    assert services.delete_object(object_id="a") == {"deleted": 1, "personalized_deleted": 1}
    assert services.delete_object(object_id="a") is None
    assert not (Object.objects.exists() or ObjectPart.objects.exists() or PersonalizedPart.objects.exists())


def test_cosine_drift():
    original = np.asarray([[1.0, 0.0], [0.0, 1.0]])
    assert services.cosine_drift(original, original * 3) == pytest.approx(0.0)
    assert services.cosine_drift(original, np.asarray([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(1.0)
    assert services.cosine_drift(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0


# --- embedder -----------------------------------------------------------------------


def test_embedding_is_deterministic_unit_and_384_dims():
    first = embedding.embed_text("Star Wars (1977). Genres: Action, Adventure, Sci-Fi.")
    second = embedding.embed_texts(["Star Wars (1977). Genres: Action, Adventure, Sci-Fi.", "Toy Story"])
    assert first.shape == (DIM,) and first.dtype == np.float32
    assert np.array_equal(first, second[0])
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert float(first @ second[1]) < 0.9
    assert embedding.embed_texts([]).shape == (0, DIM)


def test_model_loads_without_deprecation_warning(monkeypatch):
    monkeypatch.setattr(embedding, "_model", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedding.embed_text("hello")
    assert not [w for w in caught if "get_sentence_embedding_dimension" in str(w.message)]


def test_embedder_none_refuses_to_embed(settings, monkeypatch):
    settings.STUDIO_EMBEDDER = "none"
    monkeypatch.setattr(embedding, "_model", None)
    assert not embedding.embedder_enabled()
    with pytest.raises(embedding.EmbedderUnavailable):
        embedding.embed_text("hello")


def test_split_text(settings):
    settings.STUDIO_EMBEDDER_MAX_WORDS = 3
    assert embedding.split_text("  a b c  ") == ["a b c"]
    assert embedding.split_text("a b c d e f g") == ["a b c", "d e f", "g"]


def test_validate_vector_rules():
    from studio.core.vectors import InvalidVector, validate_vector, validate_vector_array

    assert validate_vector([1, 2.5, 0], dim=3) == [1.0, 2.5, 0.0]
    assert validate_vector_array(np.asarray([1, 2, 3], dtype=np.int64), dim=3).dtype == np.float32
    assert validate_vector([np.float64(1.0), np.int32(2), 3], dim=3) == [1.0, 2.0, 3.0]
    for bad in ([1, 2], [1, 2, float("nan")], [1, 2, float("inf")], [1, 2, "3"], [1, 2, True], "123", None):
        with pytest.raises(InvalidVector):
            validate_vector(bad, dim=3)
    with pytest.raises(InvalidVector, match="32-bit"):
        validate_vector([1, 2, 3.5e38], dim=3)
    with pytest.raises(InvalidVector):
        validate_vector([1, 2, 10**400], dim=3)
    with pytest.raises(InvalidVector):
        validate_vector_array(np.zeros((3, 1)), dim=3)


# --- HNSW ---------------------------------------------------------------------------


def test_nearest_neighbour_query_uses_the_hnsw_index(db):
    rng = np.random.default_rng(2)
    vectors = random_unit(rng, 3000)
    services.copy_objects(rows=((f"r{i}", {}, "", [vectors[i]]) for i in range(len(vectors))), batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE studio_objectpart")
        query = "[" + ",".join(f"{x:.6f}" for x in vectors[17]) + "]"
        cursor.execute(
            "EXPLAIN SELECT object_id FROM studio_objectpart ORDER BY vector <=> %s::vector LIMIT 10", [query]
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(
            "SELECT o.object_id FROM studio_objectpart p JOIN studio_object o ON o.id = p.object_id "
            "ORDER BY p.vector <=> %s::vector LIMIT 1",
            [query],
        )
        nearest = cursor.fetchone()[0]
    assert services.HNSW_INDEX_NAME in plan, plan
    assert nearest == "r17"


# --- load_objects -------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_load(path: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("load_objects", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_load_objects_jsonl(db, tmp_path):
    rng = np.random.default_rng(3)
    vectors = random_unit(rng, 4).round(6).tolist()
    lines = [
        json.dumps({"object_id": "v1", "payload": {"genre": "drama"}, "vector": vectors[0]}),
        "",
        '{"object_id": "broken", "vector": [1, 2',
        json.dumps({"object_id": "multi", "vectors": [vectors[1], vectors[2]], "average": True}),
        json.dumps({"object_id": "bad-dim", "vector": [0.1, 0.2]}),
        json.dumps({"object_id": "txt", "text": "A heist film set in Lisbon."}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"object_id": "v1", "payload": {"genre": "comedy"}, "vector": vectors[3]}),  # later line wins
    ]
    services.drop_hnsw_index()
    out, err = run_load(write(tmp_path / "objects.jsonl", "\n".join(lines) + "\n"))

    assert sorted(Object.objects.values_list("object_id", flat=True)) == ["multi", "txt", "v1"]
    v1 = Object.objects.get(object_id="v1")
    assert v1.payload == {"genre": "comedy"}
    assert np.allclose(v1.parts.get().vector, vectors[3], atol=1e-6)
    multi = [(p.index, p.is_average) for p in ObjectPart.objects.filter(object__object_id="multi").order_by("index")]
    assert multi == [(0, False), (1, False), (2, True)]
    txt = ObjectPart.objects.get(object__object_id="txt")
    assert np.allclose(txt.vector, embedding.embed_text("A heist film set in Lisbon."), atol=1e-5)
    assert "skipped line 3: not JSON" in err
    assert "skipped line 5 (bad-dim): vector: must have 384 dimensions" in err
    assert "skipped line 7" in err and "JSON object" in err
    assert "skipped 3" in out
    assert hnsw_index_definition() is not None  # rebuilt after the load


def test_load_objects_csv(db, tmp_path):
    vector = json.dumps(unit_vector(0.6, 0.8))
    rows = [
        "object_id,text,vector,payload,genre",
        f'c1,,"{vector.replace(chr(34), chr(34) * 2)}","{{""year"": 1999}}",drama',
        "c2,A documentary about bees.,,,nature",
        'c3,,"[1, 2",,x',
        "c4,,,,empty",
        'c5,,,"[1]",x',
    ]
    out, err = run_load(write(tmp_path / "objects.csv", "\n".join(rows) + "\n"))
    assert sorted(Object.objects.values_list("object_id", flat=True)) == ["c1", "c2"]
    c1 = Object.objects.get(object_id="c1")
    assert c1.payload == {"year": 1999, "genre": "drama"}
    assert np.allclose(c1.parts.get().vector[:2], [0.6, 0.8])
    c2 = Object.objects.get(object_id="c2")
    assert c2.text == "A documentary about bees." and c2.payload == {"genre": "nature"}
    assert "line 4: vector is not JSON" in err
    assert "line 5 (c4): one of text, vector or vectors is required" in err
    assert "line 6: payload must be a JSON object" in err
    assert hnsw_index_definition() is not None


def test_load_objects_keep_index_and_missing_file(db, tmp_path):
    path = write(tmp_path / "one.jsonl", json.dumps({"object_id": "k", "vector": unit_vector(1.0)}) + "\n")
    out, _ = run_load(path, "--keep-index")
    assert "index built" not in out
    assert hnsw_index_definition() is not None
    assert Object.objects.filter(object_id="k").exists()
    with pytest.raises(CommandError):
        run_load(tmp_path / "missing.jsonl")


def test_load_objects_skips_a_line_that_is_not_utf8(db, tmp_path):
    good = json.dumps({"object_id": "u", "vector": unit_vector(1.0)}).encode()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + b"\n" + b'{"object_id": "caf\xe9", "vector": [1]}\n')
    out, err = run_load(path)
    assert list(Object.objects.values_list("object_id", flat=True)) == ["u"]
    assert "skipped line 2: not JSON" in err


def test_load_objects_refuses_a_csv_that_is_not_utf8_and_keeps_the_index(db, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"object_id,text\nx,caf\xe9\n")
    with pytest.raises(CommandError, match="UTF-8"):
        run_load(path)
    assert hnsw_index_definition() is not None


def test_copy_objects_raises_what_the_reader_raised(db):
    def rows():
        yield ("a", {}, "", [unit_vector(1.0)])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        services.copy_objects(rows=rows(), batch_size=1)
    assert list(Object.objects.values_list("object_id", flat=True)) == ["a"]  # the batch before it landed


# --- create_api_key -----------------------------------------------------------------


def test_create_api_key_prints_key_last_and_it_works(db):
    out = io.StringIO()
    call_command("create_api_key", "--name", "ci", "--scopes", "catalog,search", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    match = re.fullmatch(r"API key: (\S+)", last)
    assert match, out.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {match.group(1)}")
    assert client.get("/api/v1/objects/nothing").status_code == 404
    assert client.post("/api/v1/objects", {"objects": [{"object_id": "a", "vector": unit_vector(1.0)}]}, format="json")
    assert Object.objects.filter(object_id="a").exists()


def test_create_api_key_refuses_unknown_scope(db):
    with pytest.raises(CommandError, match="scopes"):
        call_command("create_api_key", "--name", "x", "--scopes", "catalog,root", stdout=io.StringIO())


# --- load_demo ----------------------------------------------------------------------


def test_load_demo_loads_movies_once(db, monkeypatch):
    from studio.management.commands import load_demo

    movies = load_demo.demo_items()
    assert len(movies) == 1682
    assert movies[0].object_id == "movie-1" and movies[0].payload["title"]
    monkeypatch.setattr(load_demo, "demo_items", lambda: movies[:12])  # embedding all 1,682 is slow here
    call_command("load_demo", stdout=io.StringIO(), stderr=io.StringIO())
    assert Object.objects.filter(object_id__startswith="movie-").count() == 12
    assert ObjectPart.objects.count() == 12
    out = io.StringIO()
    call_command("load_demo", stdout=out, stderr=io.StringIO())
    assert "already loaded" in out.getvalue()


# --- health -------------------------------------------------------------------------


def test_health_reports_database_pgvector_broker(db):
    response = APIClient().get("/api/v1/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+", body["database"]["pgvector"])
    assert body["broker"] == {"ok": True}
    assert set(body["workers"]) >= {"ok", "workers"}
    assert isinstance(body["pending_sessions"], int) and body["pending_sessions_capped"] is False
    assert body["embedding_dim"] == DIM


def test_health_pending_sessions_are_counted_with_a_cap(db, monkeypatch):
    from clickstream.models import Session

    now = timezone.now()
    for number in range(4):
        Session.objects.create(session_id=f"s{number}", user_id="u", fingerprint="f", created_at=now)
    Session.objects.create(session_id="anon", user_id=None, fingerprint="f", created_at=now)
    assert health.pending_sessions() == 4
    monkeypatch.setattr(health, "PENDING_COUNT_CAP", 2)
    assert health.pending_sessions() == 3  # stopped counting at cap + 1
    body = APIClient().get("/api/v1/health").json()
    assert body["pending_sessions"] == 2 and body["pending_sessions_capped"] is True


@pytest.mark.slow
def test_health_reports_a_running_worker(transactional_db, start_worker):
    start_worker()
    deadline = time.monotonic() + 30
    body = {}
    while time.monotonic() < deadline:
        body = APIClient().get("/api/v1/health").json()
        if body["workers"]["ok"]:
            break
        time.sleep(0.5)
    assert body["workers"]["ok"] is True, body
    assert body["workers"]["workers"]


# --- schema, docs, admin ------------------------------------------------------------


def test_schema_is_valid_openapi_with_operations_everywhere(db):
    from drf_spectacular.validation import validate_schema

    response = APIClient().get("/api/v1/schema", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    methods = {"get", "put", "post", "delete", "patch"}
    for path, item in schema["paths"].items():
        assert methods & set(item), f"{path} has no operation"
    objects = schema["paths"]["/api/v1/objects"]["post"]
    request = objects["requestBody"]["content"]["application/json"]["schema"]
    components = schema["components"]["schemas"]

    def resolve(node):
        return components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    item = resolve(resolve(request)["properties"]["objects"]["items"])
    assert {"object_id", "payload", "text", "vector", "vectors", "average"} <= set(item["properties"])
    errors = resolve(resolve(objects["responses"]["200"]["content"]["application/json"]["schema"]))
    error_item = resolve(errors["properties"]["errors"]["items"])
    assert {"index", "object_id", "code", "message"} <= set(error_item["properties"])
    assert {"200", "400", "401", "403", "413"} <= set(objects["responses"])
    assert "ApiKey" in schema["components"]["securitySchemes"]
    detail = schema["paths"]["/api/v1/objects/{object_id}"]
    assert {"get", "delete"} <= set(detail)


def test_docs_page_loads_with_local_assets_only(db):
    client = APIClient()
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert urls
    assert not [u for u in urls if re.match(r"(https?:)?//", u)], urls
    assert "cdn" not in html.lower()
    for url in urls:
        if url.startswith("/static/"):
            asset = client.get(url)
            assert asset.status_code == 200, url
            b"".join(asset.streaming_content) if asset.streaming else asset.content


def test_admin_pages_render(db, client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    obj = make_object("a", [0.123456789] * DIM)
    copy = PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=[0.5] * DIM)
    from studio.core.auth import create_api_key

    key, _ = create_api_key(name="admin-test", scopes=["catalog"])
    pages = [
        "/admin/",
        "/admin/studio/object/",
        f"/admin/studio/object/{obj.pk}/change/",
        "/admin/studio/personalizedobject/",
        f"/admin/studio/personalizedobject/{copy.pk}/change/",
        "/admin/studio/apikey/",
        f"/admin/studio/apikey/{key.pk}/change/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
    listing = client.get("/admin/studio/object/").content.decode()
    assert listing.count("0.123") < 10  # vectors are never listed in full
    assert key.key_hash not in client.get("/admin/studio/apikey/").content.decode()


# --- error handler ------------------------------------------------------------------


def test_exception_handler_covers_every_drf_exception_and_django_errors():
    from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
    from django.core.exceptions import RequestDataTooBig
    from django.core.exceptions import ValidationError as DjangoValidationError
    from django.db import OperationalError
    from django.http import Http404
    from rest_framework import exceptions

    from studio.core.errors import ApiError, api_exception_handler

    cases = [
        (exceptions.ParseError(), 400, "parse_error"),
        (exceptions.ValidationError({"limit": ["Too big."]}), 400, "invalid"),
        (exceptions.ValidationError(["Bad."]), 400, "invalid"),
        (exceptions.AuthenticationFailed(), 401, "authentication_failed"),
        (exceptions.NotAuthenticated(), 401, "not_authenticated"),
        (exceptions.PermissionDenied(), 403, "permission_denied"),
        (exceptions.NotFound(), 404, "not_found"),
        (exceptions.MethodNotAllowed("PUT"), 405, "method_not_allowed"),
        (exceptions.NotAcceptable(), 406, "not_acceptable"),
        (exceptions.UnsupportedMediaType("text/plain"), 415, "unsupported_media_type"),
        (exceptions.Throttled(wait=3), 429, "throttled"),
        (exceptions.APIException(), 500, "error"),
        (ApiError(code="too_many_items", message="m", status_code=413, fields={"x": ["y"]}), 413, "too_many_items"),
        (Http404(), 404, "not_found"),
        (DjangoPermissionDenied(), 403, "permission_denied"),
        (DjangoValidationError({"name": ["Required."]}), 400, "invalid"),
        (DjangoValidationError("Bad."), 400, "invalid"),
        (RequestDataTooBig(), 413, "payload_too_large"),
        (OperationalError("down"), 503, "database_unavailable"),
        (IntegrityError("dup"), 409, "conflict"),
        (DataError("range"), 400, "invalid"),
        (RecursionError(), 400, "parse_error"),
    ]
    for exc, status, code in cases:
        response = api_exception_handler(exc, {"request": None, "view": None})
        assert response is not None, exc
        assert response.status_code == status, (exc, response.status_code)
        assert set(response.data) == {"error"}, exc
        assert response.data["error"]["code"] == code, (exc, response.data)
        assert isinstance(response.data["error"]["message"], str) and response.data["error"]["message"]
        assert isinstance(response.data["error"]["fields"], dict)
    throttled = api_exception_handler(exceptions.Throttled(wait=3), {"request": None, "view": None})
    assert throttled["Retry-After"] == "3"
    invalid = api_exception_handler(exceptions.ValidationError({"limit": ["Too big."]}), {})
    assert invalid.data["error"]["fields"] == {"limit": ["Too big."]}
    assert invalid.data["error"]["message"] == "limit: Too big."
    assert api_exception_handler(ValueError("not ours"), {}) is None  # left to the middleware: JSON 500


def test_rebuild_index_command_recreates_the_hnsw_index(db):
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection

    from studio.catalogue.services import HNSW_INDEX_NAME, drop_hnsw_index

    drop_hnsw_index()
    out = StringIO()
    call_command("rebuild_index", stdout=out)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [HNSW_INDEX_NAME])
        (definition,) = cursor.fetchone()
    assert "hnsw" in definition and "vector_cosine_ops" in definition
    assert HNSW_INDEX_NAME in out.getvalue()

"""studio.core.auth, API keys: hashing, Bearer authentication, revocation, scopes on every catalogue endpoint."""

from __future__ import annotations

import hashlib

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from studio.core import auth
from studio.models import ApiKey
from tests.support import unit_vector

CATALOGUE_CALLS = [
    ("post", "/api/v1/objects", {"objects": [{"object_id": "a", "vector": None}]}),
    ("get", "/api/v1/objects/a", None),
    ("delete", "/api/v1/objects/a", None),
]


def call(client: APIClient, method: str, path: str, body):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, format="json")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    auth.clear_key_cache()
    yield
    auth.clear_key_cache()


def test_key_is_stored_hashed(db):
    key, plain = auth.create_api_key(name="n", scopes=["search", "catalog", "search"])
    key.refresh_from_db()
    assert plain.startswith(f"sk_{key.prefix}_")
    assert key.key_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in (key.key_hash, key.prefix, key.name)
    assert key.scopes == ["catalog", "search"]
    assert auth.verify_api_key(plain).pk == key.pk
    assert auth.verify_api_key(plain + "x") is None
    assert auth.verify_api_key(f"sk_{key.prefix}_wrong") is None
    assert auth.verify_api_key("garbage") is None


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("n", []), ("n", ["nope"]), ("n", ["search", "root"]), ("", ["search"]), ("x" * 129, ["search"])],
)
def test_create_refuses_bad_scopes_or_name(db, name, scopes):
    with pytest.raises(ValueError):
        auth.create_api_key(name=name, scopes=scopes)
    assert ApiKey.objects.count() == 0


def test_scopes_check_constraint(db):
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.create(name="bad", prefix="p1", key_hash="0" * 64, scopes=["catalog", "superuser"])
    ApiKey.objects.create(name="ok", prefix="p2", key_hash="0" * 64, scopes=["catalog", "admin"])


def test_prefix_is_unique(db):
    ApiKey.objects.create(name="a", prefix="same", key_hash="0" * 64, scopes=["catalog"])
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.create(name="b", prefix="same", key_hash="1" * 64, scopes=["catalog"])


@pytest.mark.parametrize(("method", "path", "body"), CATALOGUE_CALLS)
def test_no_key_is_401(db, method, path, body):
    response = call(APIClient(), method, path, body)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer sk_nope_nope", "Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer"],
)
def test_invalid_key_is_401(db, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_error(client.get("/api/v1/objects/a"), 401, "authentication_failed")


def test_revoked_key_is_401(make_client):
    client = make_client("catalog")
    assert client.get("/api/v1/objects/a").status_code == 404  # authenticated: the object is unknown
    ApiKey.objects.update(revoked_at=timezone.now())
    auth.clear_key_cache()  # as after the cache TTL
    assert_error(client.get("/api/v1/objects/a"), 401, "authentication_failed")


def test_revocation_takes_effect_within_the_cache_ttl(make_client, settings, monkeypatch):
    client = make_client("catalog")
    assert client.get("/api/v1/objects/a").status_code == 404
    ApiKey.objects.update(revoked_at=timezone.now())
    now = [auth._monotonic()]
    monkeypatch.setattr(auth, "_monotonic", lambda: now[0])
    now[0] += auth.KEY_CACHE_SECONDS - 1
    assert client.get("/api/v1/objects/a").status_code == 404  # documented: cached for up to the TTL
    now[0] += 1.01
    assert_error(client.get("/api/v1/objects/a"), 401, "authentication_failed")


def test_revoke_service_is_immediate_in_process(make_client):
    client = make_client("catalog")
    other = make_client("catalog")
    assert client.get("/api/v1/objects/a").status_code == 404
    key = ApiKey.objects.get(key_hash=hashlib.sha256(client.api_key.encode()).hexdigest())
    assert auth.revoke_api_keys(pks=[key.pk]) == 1
    assert auth.revoke_api_keys(pks=[key.pk]) == 0
    assert_error(client.get("/api/v1/objects/a"), 401, "authentication_failed")
    assert other.get("/api/v1/objects/a").status_code == 404


@pytest.mark.parametrize(("method", "path", "body"), CATALOGUE_CALLS)
@pytest.mark.parametrize("scopes", [("search",), ("ingest",), ("admin",), ("search", "ingest", "admin")])
def test_catalogue_endpoints_need_catalog_scope(make_client, method, path, body, scopes):
    body = assert_error(call(make_client(*scopes), method, path, body), 403, "permission_denied")
    assert "catalog" in body["error"]["message"]


def test_catalog_scope_reaches_every_catalogue_endpoint(make_client):
    client = make_client("catalog")
    assert client.post(
        "/api/v1/objects", {"objects": [{"object_id": "a", "vector": unit_vector(1.0)}]}, format="json"
    ).json() == {"upserted": 1, "errors": []}
    assert client.get("/api/v1/objects/a").status_code == 200
    assert client.delete("/api/v1/objects/a").status_code == 200


def test_last_used_is_recorded(make_client):
    client = make_client("catalog")
    assert ApiKey.objects.get().last_used_at is None
    client.get("/api/v1/objects/a")
    assert ApiKey.objects.get().last_used_at is not None


def test_health_schema_and_docs_need_no_key(db):
    client = APIClient()
    assert client.get("/api/v1/health").status_code in (200, 503)
    assert client.get("/api/v1/schema").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200


def test_throttled_request_is_429_with_retry_after(make_client, monkeypatch):
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    client = make_client("catalog")
    assert client.get("/api/v1/objects/a").status_code == 404
    assert client.get("/api/v1/objects/a").status_code == 404
    response = client.get("/api/v1/objects/a")
    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0

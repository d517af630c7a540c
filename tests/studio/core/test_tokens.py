"""User-bound tokens (DESIGN §9): ``POST /api/v1/tokens`` issues a signed, expiring token; with it a browser
searches, posts sessions and events, and reads sessions only as its user — anything else is 403 — and the
``ingest`` / ``sessions:read`` split keeps old keys working (a data migration gives ingest keys sessions:read)."""

from __future__ import annotations

import importlib
import time

import pytest
from rest_framework.test import APIClient

from studio.core import tokens
from studio.models import ApiKey
from tests.support import unit_vector

SESSION = {"search_query": "q", "search_results": [{"object_id": "a"}]}


def bearer(credential: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client


@pytest.fixture
def alice(make_client):
    issuer = make_client("tokens")
    response = issuer.post("/api/v1/tokens", {"user_id": "alice", "ttl_seconds": 600}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["user_id"] == "alice" and body["scopes"] == ["ingest", "search", "sessions:read"]
    return bearer(body["token"])


def test_issuing_needs_the_tokens_scope_and_a_valid_user(make_client):
    assert make_client("admin").post("/api/v1/tokens", {"user_id": "a"}, format="json").status_code == 403
    issuer = make_client("tokens")
    for body, field in (
        ({}, "user_id"),
        ({"user_id": " a"}, "user_id"),
        ({"user_id": "a", "ttl_seconds": 0}, "ttl_seconds"),
    ):
        response = issuer.post("/api/v1/tokens", body, format="json")
        assert response.status_code == 400 and field in response.json()["error"]["fields"], body


def test_a_token_searches_only_as_its_user(alice, db):
    vector = unit_vector(1.0)
    assert alice.post("/api/v1/search", {"query_vector": vector, "track": False}, format="json").status_code == 200
    mine = alice.post("/api/v1/search", {"query_vector": vector, "user_id": "alice", "track": False}, format="json")
    assert mine.status_code == 200
    other = alice.post("/api/v1/search", {"query_vector": vector, "user_id": "bob"}, format="json")
    assert other.status_code == 403 and "user_id" in other.json()["error"]["fields"]


def test_a_token_registers_and_reads_only_its_users_sessions(alice, make_client):
    created = alice.post(
        "/api/v1/clickstream/sessions", {**SESSION, "session_id": "s1", "user_id": "alice"}, format="json"
    )
    assert created.status_code == 201
    foreign = alice.post(
        "/api/v1/clickstream/sessions", {**SESSION, "session_id": "s2", "user_id": "bob"}, format="json"
    )
    assert foreign.status_code == 403
    batch = {"sessions": [{**SESSION, "session_id": "s3", "user_id": "alice"}, {**SESSION, "session_id": "s4"}]}
    assert alice.post("/api/v1/clickstream/sessions/batch", batch, format="json").status_code == 403  # nothing written
    key = make_client("ingest", "sessions:read")
    assert (
        key.post(
            "/api/v1/clickstream/sessions", {**SESSION, "session_id": "b1", "user_id": "bob"}, format="json"
        ).status_code
        == 201
    )

    assert alice.get("/api/v1/clickstream/sessions/s1").status_code == 200
    assert alice.get("/api/v1/clickstream/sessions/b1").status_code == 403  # bob's
    assert alice.get("/api/v1/clickstream/sessions/s3").status_code == 404  # the refused batch wrote nothing
    click = {"events": [{"session_id": "s1", "event_id": "e1", "object_id": "a"}]}
    assert alice.post("/api/v1/clickstream/events", click, format="json").json()["accepted"] == 1
    on_bob = {"events": [{"session_id": "b1", "event_id": "e1", "object_id": "a"}]}
    assert alice.post("/api/v1/clickstream/events", on_bob, format="json").status_code == 403
    assert alice.post("/api/v1/clickstream/sessions/b1/irrelevant").status_code == 403


def test_a_token_reaches_nothing_else(alice):
    assert alice.post("/api/v1/tokens", {"user_id": "alice"}, format="json").status_code == 403
    assert alice.delete("/api/v1/users/bob").status_code == 403
    assert alice.get("/api/v1/improvement/runs").status_code == 403
    assert alice.post("/api/v1/objects", {"objects": []}, format="json").status_code == 403


def test_a_token_expires_and_a_new_secret_revokes_every_token(db, settings):
    token, _ = tokens.issue_user_token(user_id="alice", ttl_seconds=1, key_id=1)
    assert tokens.verify_user_token(token).user_id == "alice"
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert tokens.verify_user_token(tampered) is None
    assert bearer(tampered).get("/api/v1/clickstream/sessions/x").status_code == 401
    settings.STUDIO_TOKEN_SECRET = "a new secret"
    assert tokens.verify_user_token(token) is None
    settings.STUDIO_TOKEN_SECRET = ""
    time.sleep(1.1)
    assert tokens.verify_user_token(token) is None  # expired


def test_reading_sessions_needs_sessions_read_and_old_ingest_keys_keep_it(make_client, db):
    assert make_client("ingest").get("/api/v1/clickstream/sessions/x").status_code == 403
    assert make_client("sessions:read").get("/api/v1/clickstream/sessions/x").status_code == 404
    migration = importlib.import_module("studio.migrations.0005_split_sessions_read_scope_and_tokens")
    old = ApiKey.objects.create(name="old", prefix="p0ld", key_hash="0" * 64, scopes=["ingest", "search"])
    reader = ApiKey.objects.create(name="reader", prefix="p1", key_hash="1" * 64, scopes=["search"])
    from django.apps import apps

    migration.give_ingest_keys_sessions_read(apps, None)
    old.refresh_from_db()
    reader.refresh_from_db()
    assert old.scopes == ["ingest", "search", "sessions:read"] and reader.scopes == ["search"]


def test_a_tokens_requests_are_throttled_apart_from_its_issuing_key(make_client, monkeypatch):
    from studio.core.auth import ApiKeyRateThrottle

    issuer = make_client("tokens", "sessions:read")
    plain = issuer.post("/api/v1/tokens", {"user_id": "alice"}, format="json").json()["token"]
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    alice = bearer(plain)
    assert [alice.get("/api/v1/clickstream/sessions/x").status_code for _ in range(3)] == [404, 404, 429]
    assert issuer.get("/api/v1/clickstream/sessions/x").status_code == 404  # the key's own budget is untouched

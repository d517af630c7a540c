"""studio.console.health (and ``GET /api/v1/health``): database, pgvector, broker, workers, pending sessions."""

from __future__ import annotations

import os
import re
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from studio.console import health
from tests.studio.catalogue.support import DIM


def test_health_reports_database_pgvector_broker(db):
    response = APIClient().get("/api/v1/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+", body["database"]["pgvector"])
    if not os.environ.get("DATABASE_URL"):  # the embedded server is PostgreSQL 18 + pgvector 0.8.6
        assert body["database"]["postgresql"].split(".")[0] == "18"
        assert body["database"]["pgvector"] == "0.8.6"
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
    assert health.pending_sessions() == 5  # anonymous sessions too: they teach the shared tier
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

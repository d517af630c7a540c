"""clickstream.api idempotency under concurrency: 20 identical requests at once, each on its own database connection."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from clickstream.models import Event, Session, ShownResult

THREADS = 20


def run_concurrently(plain_key: str, requests: list[tuple[str, dict]]) -> list:
    """POST each (url, body) from its own thread (own client, own connection), all released at once."""
    barrier = threading.Barrier(len(requests))
    responses: list = [None] * len(requests)

    def worker(slot: int, url: str, body: dict) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain_key}")
        try:
            barrier.wait(timeout=30)
            responses[slot] = client.post(url, body, format="json")
        except Exception as exc:  # surfaced by the assertion below
            responses[slot] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, url, body)) for i, (url, body) in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(isinstance(r, Exception) for r in responses), responses
    return responses


@pytest.fixture
def ingest_key(transactional_db, make_client) -> str:
    return make_client("ingest").api_key


def session_body(session_id: str) -> dict:
    return {
        "session_id": session_id,
        "user_id": "u1",
        "search_query": "q",
        "search_results": [{"object_id": f"o{i}"} for i in range(10)],
    }


def test_twenty_identical_session_posts_make_one_row(ingest_key):
    body = session_body("race")
    responses = run_concurrently(ingest_key, [("/api/v1/clickstream/sessions", body)] * THREADS)
    assert Counter(r.status_code for r in responses) == Counter({201: 1, 200: THREADS - 1})
    assert Session.objects.filter(session_id="race").count() == 1
    assert ShownResult.objects.count() == 10
    assert {r.json()["received_at"] for r in responses if r.status_code == 200} == {
        Session.objects.get().received_at.isoformat().replace("+00:00", "Z")
    }


def test_twenty_identical_session_batches_make_one_row_per_session(ingest_key):
    sessions = [session_body(f"s{i}") for i in range(20)]
    # Half the requests list the sessions in reverse: overlapping batches must not deadlock.
    requests = [
        ("/api/v1/clickstream/sessions/batch", {"sessions": sessions if n % 2 else sessions[::-1]})
        for n in range(THREADS)
    ]
    responses = run_concurrently(ingest_key, requests)
    assert {r.status_code for r in responses} == {200}
    assert sum(r.json()["accepted"] for r in responses) == 20
    assert sum(r.json()["duplicates"] for r in responses) == 20 * (THREADS - 1)
    assert all(r.json()["rejected"] == [] for r in responses)
    assert Session.objects.count() == 20
    assert ShownResult.objects.count() == 200


def test_twenty_identical_event_batches_store_each_event_once(ingest_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
    for i in range(5):
        assert client.post("/api/v1/clickstream/sessions", session_body(f"s{i}"), format="json").status_code == 201
    events = [{"session_id": f"s{i % 5}", "event_id": f"e{i}", "object_id": f"o{i % 10}"} for i in range(100)]
    requests = [("/api/v1/clickstream/events", {"events": events if n % 2 else events[::-1]}) for n in range(THREADS)]
    responses = run_concurrently(ingest_key, requests)
    assert {r.status_code for r in responses} == {200}
    assert sum(r.json()["accepted"] for r in responses) == 100
    assert sum(r.json()["duplicates"] for r in responses) == 100 * (THREADS - 1)
    assert Event.objects.count() == 100

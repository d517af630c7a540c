"""The one-click target of DESIGN §7 through the API, on the demo catalogue: a new user searches "space
adventure" and clicks result 7; after one run it is in that user's top 3 and at least 5 of the 6 results
above it are still in their top 10. (The browser test performs the same sequence on the demo page.)"""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command

from tests.improvement.support import run_improvement


@pytest.fixture
def demo_catalogue(db, settings):
    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    call_command("load_demo", verbosity=0)


@pytest.mark.slow
def test_one_click_lifts_result_7_into_the_top_3_and_keeps_the_page(demo_catalogue, make_client):
    api = make_client("search", "ingest")
    user = f"newcomer-{uuid.uuid4().hex[:6]}"
    first = api.post("/api/v1/search", {"query": "space adventure", "user_id": user}, format="json").json()
    before = [r["object_id"] for r in first["results"]]
    target, above = before[6], before[:6]
    event = {"session_id": first["session_id"], "event_id": "c1", "object_id": target}
    assert api.post("/api/v1/clickstream/events", {"events": [event]}, format="json").status_code in (200, 201, 207)

    run = run_improvement()
    assert run.used == 1

    second = api.post("/api/v1/search", {"query": "space adventure", "user_id": user}, format="json").json()
    after = [r["object_id"] for r in second["results"]]
    assert after.index(target) < 3, (before, after)
    assert sum(1 for object_id in above if object_id in after) >= 5, (before, after)
    assert second["results"][after.index(target)]["personalized"] is True
    # Anyone else: unchanged (one user alone never moves the shared tier).
    other = api.post("/api/v1/search", {"query": "space adventure", "track": False}, format="json").json()
    assert [r["object_id"] for r in other["results"]] == before

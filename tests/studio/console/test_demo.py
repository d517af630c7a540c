"""studio.console.demo: the demo page (``/``) and its "Improve now" endpoint (``POST /demo/improve``).

The browser drives the same page in tests/system/test_browser.py; these tests pin the server side:
the STUDIO_DEMO switch, the key in the page, CSRF, input errors, and that "Improve now" learns
from one user's fresh sessions only (``execute_run(settle_seconds=0, user_id=…)``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from clickstream.models import Session
from improvement import services as improvement_services
from improvement.models import ImprovementRun, RunTrigger
from studio.core.auth import create_api_key
from tests.improvement.support import click, load_catalogue, near, ranking, register, unit


@pytest.fixture
def demo_on(settings):
    settings.STUDIO_DEMO = True
    settings.IMPROVEMENT_SETTLE_SECONDS = 60  # the default: fresh sessions are NOT ready for beat
    return settings


@pytest.fixture
def demo_key(db, demo_on):
    _, plain = create_api_key(name="demo page", scopes=["search", "ingest"])
    demo_on.STUDIO_DEMO_API_KEY = plain
    return plain


@pytest.fixture
def world(db):
    """Six objects around one query direction."""
    rng = np.random.default_rng(11)
    query = unit(rng)[0]
    vectors = {f"m{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(6)}
    load_catalogue(vectors)
    return {"query": query, "order": ranking(query, None)}


def _page_config(response) -> dict:
    body = response.content.decode()
    start = body.index('<script id="demo-config" type="application/json">') + len(
        '<script id="demo-config" type="application/json">'
    )
    return json.loads(body[start : body.index("</script>", start)])


def test_demo_is_off_by_default(client, settings):
    settings.STUDIO_DEMO = False
    settings.STUDIO_DEMO_API_KEY = "sk_secret_must_not_show"
    page = client.get("/")
    assert page.status_code == 404
    assert b"sk_secret_must_not_show" not in page.content
    assert client.post(reverse("demo-improve"), {"user_id": "alice"}).status_code == 404


def test_demo_page_carries_key_csrf_and_api_root(client, demo_key):
    response = client.get("/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    config = _page_config(response)
    assert config["api_key"] == demo_key
    assert config["api_root"] == "/api/v1/"
    assert config["improve_url"] == reverse("demo-improve")
    assert config["csrf_token"] and "csrftoken" in response.cookies
    body = response.content.decode()
    assert 'id="user-results"' in body and 'id="anonymous-results"' in body
    assert 'id="no-key"' not in body
    assert "<script src=" not in body and "<link " not in body  # nothing external: works offline


def test_demo_page_explains_a_missing_key(client, demo_on, monkeypatch):
    demo_on.STUDIO_DEMO_API_KEY = ""
    monkeypatch.delenv("STUDIO_DEMO_API_KEY", raising=False)
    response = client.get("/")
    assert response.status_code == 200
    assert 'id="no-key"' in response.content.decode()
    assert _page_config(response)["api_key"] == ""


def test_demo_key_from_the_environment(client, demo_on, monkeypatch):
    if hasattr(demo_on, "STUDIO_DEMO_API_KEY"):
        del demo_on.STUDIO_DEMO_API_KEY
    monkeypatch.setenv("STUDIO_DEMO_API_KEY", "sk_from_env")
    assert _page_config(client.get("/"))["api_key"] == "sk_from_env"


def test_the_demo_key_searches_and_clicks_but_cannot_start_runs(client, demo_key, world):
    """What the page does from the browser, with the key the page carries."""
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {demo_key}")
    tracked = api.post(
        "/api/v1/search", {"query_vector": [float(x) for x in world["query"]], "user_id": "alice"}, format="json"
    )
    assert tracked.status_code == 200, tracked.content
    session_id = tracked.json()["session_id"]
    lower = tracked.json()["results"][4]["object_id"]
    events = api.post(
        f"/api/v1/clickstream/sessions/{session_id}/events",
        {"events": [{"event_id": "e1", "object_id": lower}]},
        format="json",
    )
    assert events.status_code == 200 and events.json()["accepted"] == 1
    anonymous = api.post(
        "/api/v1/search", {"query_vector": [float(x) for x in world["query"]], "track": False}, format="json"
    )
    assert anonymous.status_code == 200
    assert Session.objects.count() == 1  # the anonymous column registered nothing
    assert api.post("/api/v1/improvement/runs", {}, format="json").status_code == 403


def test_improve_requires_csrf(db, demo_key):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post(
        reverse("demo-improve"), '{"user_id": "alice"}', content_type="application/json"
    ).status_code == (403)
    page = strict.get("/")
    token = _page_config(page)["csrf_token"]
    response = strict.post(
        reverse("demo-improve"), '{"user_id": "alice"}', content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", None),
        ("{}", "user_id"),
        ('{"user_id": ""}', "user_id"),
        ('{"user_id": 5}', "user_id"),
        ('{"user_id": "a\\u0000b"}', "user_id"),  # NUL: PostgreSQL cannot store it
        ('{"user_id": "\\ud800"}', "user_id"),  # a lone surrogate
        ('{"user_id": " alice"}', "user_id"),  # ids are verbatim
        ("[" * 5000 + "]" * 5000, None),  # nested deeper than the parser recurses
    ],
)
def test_improve_rejects_bad_input_with_the_error_shape(client, demo_key, body, field):
    response = client.post(reverse("demo-improve"), body, content_type="application/json")
    assert response.status_code == 400
    assert not ImprovementRun.objects.exists()  # nothing queued that could never start
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if field:
        assert field in error["fields"]


def test_improve_rejects_a_too_long_user_id(client, demo_key):
    response = client.post(reverse("demo-improve"), json.dumps({"user_id": "u" * 257}), content_type="application/json")
    assert response.status_code == 400 and "user_id" in response.json()["error"]["fields"]


def test_improve_now_learns_from_that_users_fresh_sessions_only(client, demo_key, world):
    query, order = world["query"], world["order"]
    target = order[4]
    alice = register(user_id="alice", shown=order, query_vector=query)
    click(alice, target)
    bob = register(user_id="bob", shown=order, query_vector=query)
    click(bob, target)

    response = client.post(reverse("demo-improve"), {"user_id": "alice"}, content_type="application/json")
    assert response.status_code == 200, response.content
    run = response.json()
    assert run["status"] == "succeeded"
    assert (run["claimed"], run["used"]) == (1, 1)
    assert run["objects_personalized"] >= 1
    assert run["metrics"]["clicked_rank_after"] < run["metrics"]["clicked_rank_before"]
    assert "totals" not in run["metrics"]
    assert "1 session(s) learned from" in run["summary"]
    assert ranking(query, "alice").index(target) < 4
    assert ranking(query, None) == order
    assert ranking(query, "bob") == order
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.improvement_status == "done"
    assert bob.improvement_status == "pending"  # fresh, and not the demo's user: beat takes it once settled


def test_improve_with_nothing_to_learn_says_so(client, demo_key, world):
    response = client.post(reverse("demo-improve"), {"user_id": "nobody"}, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["claimed"] == 0
    assert "nothing to learn" in response.json()["summary"]


# --- the service parameters the demo relies on (improvement.services.execute_run / claim_batch) ---


def test_execute_run_defaults_still_wait_for_settling(demo_on, world):
    session = register(user_id="alice", shown=world["order"], query_vector=world["query"])
    click(session, world["order"][3])
    run = improvement_services.create_run(trigger=RunTrigger.COMMAND)
    run = improvement_services.execute_run(run_id=run.pk)
    assert run.claimed == 0
    assert run.parameters["settle_seconds"] == 60 and "user_id" not in run.parameters


def test_execute_run_narrowed_to_a_user_and_no_settle_time(demo_on, world):
    for user_id in ("alice", "bob", "carol"):
        click(register(user_id=user_id, shown=world["order"], query_vector=world["query"]), world["order"][2])
    run = improvement_services.create_run(trigger=RunTrigger.API)
    run = improvement_services.execute_run(run_id=run.pk, settle_seconds=0, user_id="bob")
    assert (run.claimed, run.used) == (1, 1)
    assert run.parameters["settle_seconds"] == 0 and run.parameters["user_id"] == "bob"
    statuses = dict(Session.objects.values_list("user_id", "improvement_status"))
    assert statuses == {"alice": "pending", "bob": "done", "carol": "pending"}
    everyone = improvement_services.create_run(trigger=RunTrigger.API)
    everyone = improvement_services.execute_run(run_id=everyone.pk, settle_seconds=0)
    assert everyone.claimed == 2

"""studio.console.demo: the demo page (``/``) and "Improve now" (``POST /demo/improve``, ``GET /demo/improve/{run}``).

The browser drives the same page in tests/system/test_browser.py; these tests pin the server side:
the STUDIO_DEMO switch, the user-bound tokens in the page (no key), CSRF, the token on "Improve now",
input errors, one bounded run per user queued for a real worker, that learns from that user's fresh
sessions only (``execute_run(settle_seconds=0, user_id=…, session_limit=…)``).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from clickstream.models import Session
from improvement import services as improvement_services
from improvement.models import ImprovementRun, RunTrigger
from studio.console.demo import DEMO_USERS
from studio.core import tokens
from studio.core.auth import create_api_key
from tests.improvement.support import click, load_catalogue, near, ranking, register, unit


@pytest.fixture
def demo_on(settings):
    settings.STUDIO_DEMO = True
    settings.IMPROVEMENT_SETTLE_SECONDS = 60  # the default: fresh sessions are NOT ready for beat
    return settings


@pytest.fixture
def demo_key(db, demo_on):
    _, plain = create_api_key(name="demo page", scopes=["tokens"])
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


def _as(token: str, client=None):
    """A Django test client sending ``token`` as the bearer credential."""
    client = client or Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _token(user_id: str) -> str:
    return tokens.issue_user_token(user_id=user_id, ttl_seconds=600, key_id=1)[0]


def _improve(client, body=None):
    payload = json.dumps({} if body is None else body) if not isinstance(body, str) else body
    return client.post(reverse("demo-improve"), payload, content_type="application/json")


def test_demo_is_off_by_default(client, settings):
    settings.STUDIO_DEMO = False
    settings.STUDIO_DEMO_API_KEY = "sk_secret_must_not_show"
    page = client.get("/")
    assert page.status_code == 404
    assert b"sk_secret_must_not_show" not in page.content
    assert _improve(_as(_token("alice"))).status_code == 404
    assert _as(_token("alice")).get(reverse("demo-improve-status", args=[1])).status_code == 404


def test_demo_page_carries_one_token_per_demo_user_and_no_key(client, demo_key):
    response = client.get("/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    config = _page_config(response)
    assert "api_key" not in config and demo_key not in response.content.decode()
    assert sorted(config["tokens"]) == sorted(DEMO_USERS)
    assert {user: tokens.verify_user_token(token).user_id for user, token in config["tokens"].items()} == {
        user: user for user in DEMO_USERS
    }
    assert config["api_root"] == "/api/v1/"
    assert config["improve_url"] == reverse("demo-improve")
    assert config["csrf_token"] and "csrftoken" in response.cookies
    body = response.content.decode()
    assert 'id="user-results"' in body and 'id="anonymous-results"' in body
    assert 'id="no-key"' not in body
    assert "<script src=" not in body and "<link " not in body  # nothing external: works offline


@pytest.mark.parametrize("scopes", [None, ["search", "ingest"]])
def test_demo_page_explains_a_missing_or_unfit_key(db, client, demo_on, monkeypatch, scopes):
    demo_on.STUDIO_DEMO_API_KEY = create_api_key(name="old demo", scopes=scopes)[1] if scopes else ""
    monkeypatch.delenv("STUDIO_DEMO_API_KEY", raising=False)
    response = client.get("/")
    assert response.status_code == 200
    assert 'id="no-key"' in response.content.decode()
    assert _page_config(response)["tokens"] == {}


def test_demo_key_from_the_environment(db, client, demo_on, monkeypatch):
    if hasattr(demo_on, "STUDIO_DEMO_API_KEY"):
        del demo_on.STUDIO_DEMO_API_KEY
    monkeypatch.setenv("STUDIO_DEMO_API_KEY", create_api_key(name="env demo", scopes=["tokens"])[1])
    assert sorted(_page_config(client.get("/"))["tokens"]) == sorted(DEMO_USERS)


def test_a_demo_token_searches_and_clicks_as_its_user_only(client, demo_key, world):
    """What the page does from the browser, with the token the page carries for alice."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {_page_config(client.get('/'))['tokens']['alice']}")
    vector = [float(x) for x in world["query"]]
    tracked = api.post("/api/v1/search", {"query_vector": vector, "user_id": "alice"}, format="json")
    assert tracked.status_code == 200, tracked.content
    session_id = tracked.json()["session_id"]
    lower = tracked.json()["results"][4]["object_id"]
    events = api.post(
        f"/api/v1/clickstream/sessions/{session_id}/events",
        {"events": [{"event_id": "e1", "object_id": lower}]},
        format="json",
    )
    assert events.status_code == 200 and events.json()["accepted"] == 1
    anonymous = api.post("/api/v1/search", {"query_vector": vector, "user_id": None}, format="json")
    assert anonymous.status_code == 200 and anonymous.json()["session_id"] is None
    assert Session.objects.count() == 1  # the anonymous column registered nothing, even with track on
    assert api.post("/api/v1/search", {"query_vector": vector, "user_id": "bob"}, format="json").status_code == 403
    assert api.post("/api/v1/improvement/runs", {}, format="json").status_code == 403


def test_improve_requires_csrf(db, demo_key):
    strict = _as(_token("alice"), Client(enforce_csrf_checks=True))
    assert _improve(strict).status_code == 403
    token = _page_config(strict.get("/"))["csrf_token"]
    response = strict.post(reverse("demo-improve"), "{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 202, response.content


def test_improve_needs_the_users_own_token(db, demo_key):
    for client in (Client(), _as("ut_forged.signature"), _as(_token("alice")[:-3] + "xyz")):
        response = _improve(client, {"user_id": "alice"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
    foreign = _improve(_as(_token("bob")), {"user_id": "alice"})
    assert foreign.status_code == 403 and "user_id" in foreign.json()["error"]["fields"]
    assert not ImprovementRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", None),
        ('{"user_id": ""}', "user_id"),
        ('{"user_id": 5}', "user_id"),
        ('{"user_id": "a\\u0000b"}', "user_id"),  # NUL: PostgreSQL cannot store it
        ('{"user_id": "\\ud800"}', "user_id"),  # a lone surrogate
        ('{"user_id": " alice"}', "user_id"),  # ids are verbatim
        ('{"user_id": "' + "u" * 257 + '"}', "user_id"),
        ("[" * 5000 + "]" * 5000, None),  # nested deeper than the parser recurses
    ],
)
def test_improve_rejects_bad_input_with_the_error_shape(db, demo_key, body, field):
    response = _improve(_as(_token("alice")), body)
    assert response.status_code == 400
    assert not ImprovementRun.objects.exists()  # nothing queued that could never start
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if field:
        assert field in error["fields"]


def test_improve_queues_one_bounded_run_per_user_off_the_request(db, demo_key, settings, celery_queue):
    settings.STUDIO_DEMO_IMPROVE_MAX_SESSIONS = 7
    alice = _as(_token("alice"))
    first = _improve(alice)
    assert first.status_code == 202, first.content
    run = ImprovementRun.objects.get(pk=first.json()["id"])
    assert (run.status, run.trigger) == ("queued", RunTrigger.DEMO)  # no worker consumes this test's queue
    assert run.parameters == {"user_id": "alice", "settle_seconds": 0, "session_limit": 7}
    assert "a worker learns" in first.json()["summary"]
    again = _improve(alice, {"user_id": "alice"})
    assert again.status_code == 202 and again.json()["id"] == run.pk  # one active run per user
    assert alice.get(first.json()["status_url"]).json()["status"] == "queued"
    assert _as(_token("bob")).get(first.json()["status_url"]).status_code == 404  # not bob's run
    assert _improve(_as(_token("bob"))).json()["id"] != run.pk


def _wait_for_run(client, status_url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(status_url).json()
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"the demo run did not finish in {timeout}s: {body}")


def test_improve_now_learns_from_that_users_fresh_sessions_only(transactional_db, demo_key, world, start_worker):
    start_worker()
    query, order = world["query"], world["order"]
    target = order[4]
    alice = register(user_id="alice", shown=order, query_vector=query)
    click(alice, target)
    bob = register(user_id="bob", shown=order, query_vector=query)
    click(bob, target)

    client = _as(_token("alice"))
    run = _wait_for_run(client, _improve(client).json()["status_url"])
    assert run["status"] == "succeeded", run
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

    nobody = _as(_token("carol"))
    empty = _wait_for_run(nobody, _improve(nobody).json()["status_url"])
    assert empty["claimed"] == 0 and "nothing to learn" in empty["summary"]


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


def test_execute_run_stops_at_its_session_limit(demo_on, world):
    for _ in range(3):
        click(register(user_id="alice", shown=world["order"], query_vector=world["query"]), world["order"][2])
    run = improvement_services.create_run(trigger=RunTrigger.DEMO)
    run = improvement_services.execute_run(run_id=run.pk, settle_seconds=0, user_id="alice", session_limit=2)
    assert run.claimed == 2 and run.parameters["session_limit"] == 2
    assert "limit of 2 sessions" in run.error
    assert sorted(Session.objects.values_list("improvement_status", flat=True)) == ["done", "done", "pending"]

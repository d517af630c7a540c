"""Runs API, user deletion, admin pages and the beat schedule."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from clickstream.models import Session
from improvement import services
from improvement.models import ImprovementAttempt, ImprovementRun, RunStatus, RunTrigger
from improvement.schedule import PERIODIC_TASK_NAME, TASK_NAME, ensure_beat_schedule
from studio.models import PersonalizedObject
from tests.test_improvement_helpers import click, load_catalogue, near, ranking, register, unit


@pytest.fixture
def learned(db, settings):
    """Two users, each with a used session and personalized copies."""
    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    rng = np.random.default_rng(11)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(5)})
    order = ranking(query, None)
    for user in ("ann", "ben"):
        click(register(user_id=user, shown=order, query_vector=query), order[3])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    return services.execute_run(run_id=run.pk)


def test_post_run_enqueues_on_commit_and_returns_202(make_client, django_capture_on_commit_callbacks, monkeypatch):
    from improvement import tasks

    sent = []
    monkeypatch.setattr(tasks.improve, "delay", lambda **kwargs: sent.append(kwargs))
    client = make_client("admin")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/api/v1/improvement/runs", {}, format="json")
    assert response.status_code == 202
    run = ImprovementRun.objects.get(pk=response.json()["id"])
    assert (run.trigger, run.status, response.json()["status"]) == (RunTrigger.API, RunStatus.QUEUED, "queued")
    assert len(callbacks) == 1 and sent == []  # nothing is sent before the run row is committed
    callbacks[0]()
    assert sent == [{"run_id": run.pk}]


def test_post_run_rejects_unknown_fields(make_client):
    response = make_client("admin").post("/api/v1/improvement/runs", {"batch": 5}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"batch": ["Unknown field."]}
    assert not ImprovementRun.objects.exists()


def test_runs_need_the_admin_scope(make_client, client):
    assert client.get("/api/v1/improvement/runs").status_code == 401
    response = make_client("search", "ingest").get("/api/v1/improvement/runs")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert make_client("catalog").delete("/api/v1/users/x").status_code == 403


def test_list_and_detail_of_runs(learned, make_client):
    services.create_run(trigger=RunTrigger.API)
    client = make_client("admin")
    page = client.get("/api/v1/improvement/runs?page_size=1").json()
    assert page["count"] == 2 and page["next"] and page["previous"] is None
    newest = page["results"][0]
    assert newest["trigger"] == "api" and newest["status"] == "queued"
    second = client.get(page["next"]).json()["results"][0]
    assert second["id"] == learned.pk
    detail = client.get(f"/api/v1/improvement/runs/{learned.pk}").json()
    assert detail["used"] == 2 and detail["status"] == "succeeded"
    assert detail["metrics"]["clicked_rank_before"] == 4.0
    assert "totals" not in detail["metrics"]
    missing = client.get("/api/v1/improvement/runs/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_delete_user_forgets_clickstream_and_copies(learned, make_client):
    client = make_client("admin")
    ann_copies = PersonalizedObject.objects.filter(user_id="ann").count()
    response = client.delete("/api/v1/users/ann")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "ann"
    assert (body["sessions"], body["shown_results"], body["events"]) == (1, 5, 1)
    assert body["improvement_attempts"] == 1
    assert body["personalized_objects"] == ann_copies > 0
    assert body["personalized_parts"] == ann_copies
    assert not Session.objects.filter(user_id="ann").exists()
    assert not PersonalizedObject.objects.filter(user_id="ann").exists()
    assert not ImprovementAttempt.objects.filter(user_id="ann").exists()
    assert PersonalizedObject.objects.filter(user_id="ben").exists()
    again = client.delete("/api/v1/users/ann").json()
    assert again["sessions"] == 0 and again["personalized_objects"] == 0
    too_long = client.delete("/api/v1/users/" + "x" * 300)
    assert too_long.status_code == 400 and "user_id" in too_long.json()["error"]["fields"]


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_runs_attempts_and_run_now(learned, admin_client, django_capture_on_commit_callbacks, monkeypatch):
    from improvement import tasks

    monkeypatch.setattr(tasks.improve, "delay", lambda **kwargs: None)
    page = admin_client.get(reverse("admin:improvement_improvementrun_changelist"))
    assert page.status_code == 200
    assert b"Run now" in page.content and b"4.00 \xe2\x86\x92" in page.content
    assert admin_client.get(reverse("admin:improvement_improvementrun_change", args=[learned.pk])).status_code == 200
    attempts = admin_client.get(
        reverse("admin:improvement_improvementattempt_changelist") + f"?run__id__exact={learned.pk}"
    )
    assert attempts.status_code == 200 and b"done" in attempts.content

    assert admin_client.get(reverse("admin:improvement_improvementrun_run_now")).status_code == 405
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(reverse("admin:improvement_improvementrun_run_now"))
    assert response.status_code == 302 and len(callbacks) == 1
    assert ImprovementRun.objects.filter(trigger=RunTrigger.ADMIN, status=RunStatus.QUEUED).count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:improvement_improvementrun_changelist"),
            {"action": "run_now", "_selected_action": [learned.pk]},
        )
    assert ImprovementRun.objects.filter(trigger=RunTrigger.ADMIN).count() == 2


def test_admin_personalized_objects_filter_links_and_reset(learned, admin_client):
    url = reverse("admin:studio_personalizedobject_changelist")
    page = admin_client.get(url + "?user_id=ann")
    assert page.status_code == 200
    assert b"_ann" in page.content and b"_ben" not in page.content
    copy = PersonalizedObject.objects.filter(user_id="ann").first()
    detail = admin_client.get(reverse("admin:studio_personalizedobject_change", args=[copy.pk]))
    session = Session.objects.get(user_id="ann")
    assert reverse("admin:clickstream_session_change", args=[session.pk]).encode() in detail.content
    assert reverse("admin:studio_object_change", args=[copy.original_id]).encode() in detail.content
    response = admin_client.post(url, {"action": "reset_user_copies", "_selected_action": [copy.pk]})
    assert response.status_code == 302
    assert not PersonalizedObject.objects.filter(user_id="ann").exists()
    assert PersonalizedObject.objects.filter(user_id="ben").exists()


def test_beat_schedule_is_created_by_migration_and_never_overwritten(db, settings):
    task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
    assert task.task == TASK_NAME and task.enabled
    assert (task.interval.every, task.interval.period) == (settings.IMPROVEMENT_INTERVAL_SECONDS, "seconds")
    # An admin's edit survives: ensuring the schedule again changes nothing.
    task.interval = IntervalSchedule.objects.create(every=600, period="seconds")
    task.enabled = False
    task.save()
    assert ensure_beat_schedule() is False
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (600, False)
    task.delete()
    assert ensure_beat_schedule() is True
    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).interval.every == settings.IMPROVEMENT_INTERVAL_SECONDS


def test_task_is_registered_with_limits_and_retries(settings):
    from studio.config.celery import app

    task = app.tasks[TASK_NAME]
    assert task.soft_time_limit == settings.IMPROVEMENT_TIME_LIMIT_SECONDS
    assert task.time_limit > task.soft_time_limit
    assert task.max_retries == settings.IMPROVEMENT_MAX_RETRIES
    from django.db import OperationalError

    assert OperationalError in task.autoretry_for

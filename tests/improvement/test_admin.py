"""improvement.admin: the runs and attempts pages, and "Run now"."""

from __future__ import annotations

from django.urls import reverse

from improvement.models import ImprovementRun, RunStatus, RunTrigger


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

"""improvement.api.runs: ``POST /api/v1/improvement/runs`` queues on commit, listing and detail, the admin scope."""

from __future__ import annotations

from improvement import services
from improvement.models import ImprovementRun, RunStatus, RunTrigger


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

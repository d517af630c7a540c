"""studio.console.dashboard: the staff-only admin dashboard and per-user page, on the real database."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from clickstream import services as clickstream_services
from clickstream.models import Session
from studio.models import Object, PersonalizedObject, PersonalizedPart
from tests.support import unit_vector

# A 1×1 PNG, standing in for the evaluation's own plot.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _session(user_id: str | None, *, status: str = "pending", query: str = "space", shown=("a", "b", "c")) -> Session:
    outcome = clickstream_services.register_session(
        session_id=uuid.uuid4().hex,
        user_id=user_id,
        search_query=query,
        query_vector=unit_vector(1.0),
        results=[clickstream_services.ShownResultInput(object_id=object_id) for object_id in shown],
    )
    Session.objects.filter(pk=outcome.session.pk).update(improvement_status=status)
    return outcome.session


def _copy(user_id: str, object_id: str, *, drift: float, title: str) -> PersonalizedObject:
    original = Object.objects.create(object_id=object_id, payload={"title": title})
    return PersonalizedObject.objects.create(
        original=original, user_id=user_id, object_id=f"{object_id}_{user_id}", drift=drift, updates=1, last_run=7
    )


def _interval(mean: float, half: float = 0.01) -> dict:
    return {"mean": mean, "low": mean - half, "high": mean + half}


def _report(dataset: str) -> dict:
    arms = {}
    for arm, delta in (("no_feedback", 0.0), ("embedding_studio", -0.05), ("studio", 0.06)):
        views = {}
        for view in ("seen", "related"):
            base = 0.10
            entry = {metric: _interval(base + delta) for metric in ("ndcg@10", "mrr@10", "recall@10", "recall@100")}
            entry["delta"] = {
                metric: _interval(delta, 0.0 if arm == "no_feedback" else 0.01)
                for metric in ("ndcg@10", "mrr@10", "recall@10", "recall@100")
            }
            views[view] = entry
        arms[arm] = views
    return {
        "dataset": dataset,
        "params": {"users": 50, "rounds": 5},
        "arms": arms,
        "guards": {"other_users_unchanged": True, "anonymous_unchanged": True, "drift_ok": False},
        "runtime_seconds": 12.5,
    }


@pytest.fixture
def reports_dir(settings, tmp_path):
    settings.STUDIO_REPORTS_DIR = str(tmp_path / "reports")
    return tmp_path / "reports"


def test_dashboard_requires_staff(client, django_user_model):
    url = reverse("studio-dashboard")
    response = client.get(url)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    user = django_user_model.objects.create_user(username="viewer", password="x")  # active, not staff
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    user_page = client.get(reverse("studio-user", args=["alice"]))
    assert user_page.status_code == 302


def test_admin_index_links_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("studio-dashboard") in body
    assert 'id="studio-dashboards"' in body
    assert "Clickstream" in body or "clickstream" in body  # the stock app list is still there


def test_dashboard_counts_sessions_by_status_without_counting_events(admin_client, reports_dir):
    for status, n in (("pending", 3), ("done", 2), ("skipped", 1), ("failed", 1)):
        for _ in range(n):
            _session("alice", status=status)
    _session(None)  # anonymous: still a pending session
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("studio-dashboard"))
    assert response.status_code == 200
    counts = response.context["status_counts"]
    assert counts == {"pending": 4, "processing": 0, "done": 2, "skipped": 1, "failed": 1}
    assert response.context["sessions_total"] == 8
    body = response.content.decode()
    assert 'data-status="done"><div class="n">2<' in body
    assert response.context["status_plot"].startswith("data:image/png;base64,")
    event_queries = [q["sql"] for q in queries.captured_queries if "clickstream_event" in q["sql"].lower()]
    assert event_queries
    # never a full COUNT(*) of the events table: a scan bounded by LIMIT, or the planner's estimate
    assert all("LIMIT" in sql or "reltuples" in sql for sql in event_queries), event_queries
    assert response.context["event_rows"] == (0, True)
    assert "alice" in response.context["recent_users"]


def test_event_rows_are_exact_when_few_and_estimated_beyond_the_bound(db):
    from studio.console import dashboard

    session = _session("alice", shown=("a", "b", "c"))
    clickstream_services.record_events(
        events=[
            clickstream_services.EventInput(
                index=i,
                session_id=session.session_id,
                event_id=f"e{i}",
                object_id=object_id,
                event_type="click",
                created_at=None,
                meta={},
            )
            for i, object_id in enumerate(("a", "b", "c"))
        ]
    )
    assert dashboard.event_rows() == (3, True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE clickstream_event")
    count, exact = dashboard.event_rows(exact_up_to=2)
    assert not exact and count >= 3


def test_dashboard_plots_runs_over_time(admin_client, reports_dir):
    from improvement.models import ImprovementRun

    empty = admin_client.get(reverse("studio-dashboard"))
    assert 'id="no-runs"' in empty.content.decode()
    now = timezone.now()
    for index in range(3):
        ImprovementRun.objects.create(
            trigger="beat",
            status="succeeded",
            started_at=now - timedelta(minutes=10 - index),
            finished_at=now - timedelta(minutes=10 - index) + timedelta(seconds=2),
            claimed=10 + index,
            used=8 + index,
            skipped={"no_click": 2},
            objects_personalized=5,
            metrics={"clicked_rank_before": 4.5, "clicked_rank_after": 2.25, "drift_p50": 0.01, "drift_p90": 0.04},
            duration_seconds=2.0,
        )
    response = admin_client.get(reverse("studio-dashboard"))
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="runs-plot" src="data:image/png;base64,' in body
    assert "4.50 → 2.25" in body
    assert "no_click: 2" in body
    assert len(response.context["runs"]) == 3
    assert response.context["runs"][0].claimed == 12  # newest first in the table


def test_dashboard_shows_evaluation_reports_with_plots(admin_client, reports_dir):
    (reports_dir / "movielens").mkdir(parents=True)
    (reports_dir / "movielens" / "report.json").write_text(json.dumps(_report("movielens")))
    (reports_dir / "movielens" / "ndcg.png").write_bytes(TINY_PNG)
    (reports_dir / "broken").mkdir()
    (reports_dir / "broken" / "report.json").write_text("{not json")
    response = admin_client.get(reverse("studio-dashboard"))
    assert response.status_code == 200
    body = response.content.decode()
    reports = {report.dataset: report for report in response.context["reports"]}
    assert set(reports) == {"movielens", "broken"}
    movielens = reports["movielens"]
    assert movielens.plot_uri == "data:image/png;base64," + base64.b64encode(TINY_PNG).decode()
    assert movielens.delta_plot_uri.startswith("data:image/png;base64,")
    assert movielens.plot_uri in body
    studio_seen = next(row for row in movielens.rows if row["arm"] == "studio" and row["view"] == "seen")
    assert studio_seen["cells"][0]["verdict"] == "better"
    es_seen = next(row for row in movielens.rows if row["arm"] == "embedding_studio" and row["view"] == "seen")
    assert es_seen["cells"][0]["verdict"] == "worse"
    assert "+0.0600 [0.0500, 0.0700]" in body
    assert "✗ drift_ok" in body and "✓ anonymous_unchanged" in body
    assert reports["broken"].error
    assert "Could not read it" in body


def test_dashboard_without_reports_says_how_to_make_one(admin_client, reports_dir):
    response = admin_client.get(reverse("studio-dashboard"))
    assert 'id="no-reports"' in response.content.decode()
    assert "make evaluate" in response.content.decode()


def test_user_lookup_redirects_to_the_user_page(admin_client, reports_dir):
    response = admin_client.get(reverse("studio-dashboard"), {"user_id": "team/alice"})
    assert response.status_code == 302
    assert response["Location"] == reverse("studio-user", args=["team/alice"])


def test_user_page_lists_sessions_and_copies_by_drift(admin_client, settings):
    clicked = _session("alice", status="done", query="space adventure", shown=("m1", "m2"))
    clickstream_services.record_events(
        events=[
            clickstream_services.EventInput(
                index=0,
                session_id=clicked.session_id,
                event_id="e1",
                object_id="m2",
                event_type="click",
                created_at=None,
                meta={},
            )
        ]
    )
    _session("alice", status="pending", query="comedy")
    _session("bob", status="pending", query="not alice's")
    for copy in (_copy("alice", "m2", drift=0.03, title="Star Wars"), _copy("alice", "m9", drift=0.05, title="Alien")):
        PersonalizedPart.objects.create(personalized=copy, index=0, vector=[0.5] * settings.STUDIO_EMBEDDING_DIM)
    _copy("bob", "m3", drift=0.5, title="Bob's copy")
    response = admin_client.get(reverse("studio-user", args=["alice"]))
    assert response.status_code == 200
    body = response.content.decode()
    assert [copy.object_id for copy in response.context["personalized"]] == ["m9_alice", "m2_alice"]
    footprint = response.context["footprint"]
    assert (footprint["copies"], footprint["parts"]) == (2, 2)
    half, full = 4 + 2 * settings.STUDIO_EMBEDDING_DIM, 4 + 4 * settings.STUDIO_EMBEDDING_DIM
    assert 2 * half < footprint["bytes"] < 2 * full  # halfvec: two bytes a dimension, not four
    assert 'id="copy-bytes"' in body
    assert "Star Wars" in body and "Alien" in body and "Bob's copy" not in body
    sessions = {row["search_query"]: row for row in response.context["sessions"]}
    assert set(sessions) == {"space adventure", "comedy"}
    assert sessions["space adventure"]["events_n"] == 1
    assert sessions["space adventure"]["shown_n"] == 2
    assert sessions["space adventure"]["first_event_object"] == "m2"
    assert response.context["session_counts"]["done"] == 1
    assert response.context["session_counts"]["pending"] == 1


def test_user_page_of_unknown_user_is_empty_not_an_error(admin_client):
    response = admin_client.get(reverse("studio-user", args=["nobody"]))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="no-personalized"' in body and 'id="no-sessions"' in body


@pytest.mark.parametrize("raw", ["%00", "a%00b", "%20u1"])
def test_user_page_of_an_id_no_endpoint_accepts_is_404_not_500(admin_client, raw):
    response = admin_client.get(f"/admin/users/{raw}/")
    assert response.status_code == 404


def test_dashboard_shows_click_analytics_and_the_interleaving_experiment(admin_client, reports_dir):
    from tests.clickstream.support import interleaved_session, shown_session
    from tests.improvement.support import click

    metas = [{"personalized": True}, {"shared": True}, {}]  # a copy ranked a, the shared tier moved b
    for query in ("space adventure", "space adventure", "romance"):
        session = shown_session(metas=metas, query=query)
        if query == "space adventure":
            click(session, "a", "b", "c")
    click(interleaved_session(query="space adventure"), "a")  # learned team: a win
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("studio-dashboard"))
    analytics = response.context["analytics"]
    assert (analytics.sessions, analytics.abandoned) == (4, 1)
    assert analytics.clicks_by_source == {"personalized": 2, "shared": 2, "original": 3}
    by_position = [(p.position, p.shown, p.clicks) for p in analytics.positions]
    assert by_position == [(0, 4, 3), (1, 4, 2), (2, 4, 2), (3, 1, 0)]
    assert [(q.query, q.sessions, q.clicked_sessions) for q in analytics.top_queries][0] == ("space adventure", 3, 3)
    assert response.context["experiment"]["wins"] == 1
    for plot in ("ctr_plot", "interleaving_plot"):
        assert response.context[plot].startswith("data:image/png;base64,")
    body = response.content.decode()
    assert 'id="ctr-plot"' in body and 'id="top-queries"' in body and 'id="interleaving-plot"' in body
    reads = [q["sql"] for q in queries.captured_queries if "clickstream_shownresult" in q["sql"].lower()]
    assert reads and all("LIMIT" in sql for sql in reads)  # bounded: never a scan of the whole table

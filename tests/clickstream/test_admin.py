"""clickstream.admin: pages render with a bounded number of queries, actions work, counts stay cheap."""

from __future__ import annotations

import pytest
from django.db import connection

from clickstream import admin as clickstream_admin
from clickstream import services
from clickstream.models import Event, Session
from clickstream.services import ShownResultInput
from clickstream.validation import EventInput


def make_sessions(count: int, *, clicks: int = 2) -> list[Session]:
    sessions = []
    for n in range(count):
        outcome = services.register_session(
            session_id=f"s{n}",
            user_id=f"u{n % 3}",
            search_query=f"query {n}",
            query_vector=None,
            results=[ShownResultInput(object_id=f"o{i}", score=1.0 - i / 10) for i in range(5)],
        )
        sessions.append(outcome.session)
    events = [
        EventInput(
            index=i,
            session_id=s.session_id,
            event_id=f"e{i}",
            object_id=f"o{i % 5}",
            event_type="click",
            created_at=None,
            meta={},
        )
        for s in sessions
        for i in range(clicks)
    ]
    services.record_events(events=events)
    return sessions


@pytest.fixture
def sessions(db):
    return make_sessions(30)


@pytest.mark.parametrize(
    "url",
    [
        "/admin/clickstream/session/",
        "/admin/clickstream/session/?improvement_status__exact=pending&is_irrelevant__exact=0",
        "/admin/clickstream/session/?q=u1",
        # the form Django's date filter links to: an aware datetime (a bare date would be naive)
        "/admin/clickstream/session/?received_at__gte=2000-01-01+00%3A00%3A00%2B00%3A00",
        "/admin/clickstream/event/",
        "/admin/clickstream/event/?q=s3",
    ],
)
def test_admin_lists_render_with_bounded_queries(admin_client, sessions, django_assert_max_num_queries, url):
    with django_assert_max_num_queries(12):
        response = admin_client.get(url)
    assert response.status_code == 200
    assert b"s1" in response.content or b"s3" in response.content


def test_session_list_shows_click_counts(admin_client, sessions):
    response = admin_client.get("/admin/clickstream/session/")
    rows = response.context["cl"].result_list
    assert {row.click_count for row in rows} == {2}
    assert "query 7" in response.content.decode()


def test_session_page_shows_results_in_order_with_clicks_marked(admin_client, db, django_assert_max_num_queries):
    session = make_sessions(1)[0]
    url = f"/admin/clickstream/session/{session.pk}/change/"
    with django_assert_max_num_queries(20):
        response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index(">o0<") < html.index(">o1<") < html.index(">o4<")
    formset = response.context["inline_admin_formsets"][0].formset
    marked = {form.instance.object_id: form.instance.was_clicked for form in formset.forms}
    assert marked == {"o0": True, "o1": True, "o2": False, "o3": False, "o4": False}
    assert "e1" in html  # events inline


def test_session_page_query_count_does_not_grow_with_events(admin_client, db, django_assert_max_num_queries):
    session = make_sessions(1, clicks=5)[0]
    with django_assert_max_num_queries(20):
        assert admin_client.get(f"/admin/clickstream/session/{session.pk}/change/").status_code == 200


def test_event_admin_is_read_only(admin_client, sessions):
    event = Event.objects.first()
    assert admin_client.get("/admin/clickstream/event/add/").status_code == 403
    response = admin_client.post(f"/admin/clickstream/event/{event.pk}/change/", {"event_type": "hack"})
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.event_type == "click"


def test_admin_actions_mark_irrelevant_and_requeue(admin_client, sessions):
    pks = [sessions[0].pk, sessions[1].pk]
    Session.objects.filter(pk__in=pks).update(improvement_status="failed", attempts=3)
    response = admin_client.post(
        "/admin/clickstream/session/", {"action": "mark_irrelevant", "_selected_action": pks}, follow=True
    )
    assert response.status_code == 200
    assert set(Session.objects.filter(is_irrelevant=True).values_list("pk", flat=True)) == set(pks)
    admin_client.post("/admin/clickstream/session/", {"action": "requeue", "_selected_action": pks})
    assert set(Session.objects.filter(pk__in=pks).values_list("improvement_status", "attempts")) == {("pending", 0)}


def test_paginator_uses_the_planner_estimate_for_big_unfiltered_tables(sessions, monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE clickstream_event")
    monkeypatch.setattr(clickstream_admin, "EXACT_COUNT_LIMIT", 10)
    unfiltered = clickstream_admin.EstimatedCountPaginator(Event.objects.order_by("-id"), 100)
    assert unfiltered.count == 60  # reltuples after ANALYZE, not a COUNT(*)
    filtered = clickstream_admin.EstimatedCountPaginator(Event.objects.filter(event_type="click").order_by("-id"), 5)
    assert filtered.count == 10  # exact, capped
    monkeypatch.setattr(clickstream_admin, "EXACT_COUNT_LIMIT", 10_000)
    small = clickstream_admin.EstimatedCountPaginator(Event.objects.order_by("-id"), 100)
    assert small.count == 60

"""Clickstream reads: a session with its shown results and events, in the API's shape."""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from clickstream.models import Event, Session, ShownResult

MAX_EVENTS_SHOWN = 1000


def get_session(*, session_id: str) -> Session | None:
    """The session with this client id, or None."""
    return Session.objects.filter(session_id=session_id).first()


def session_owners(*, session_ids: list[str]) -> dict[str, str | None]:
    """Who each of these sessions belongs to (``session_id`` → ``user_id``); unknown ids are absent."""
    if not session_ids:
        return {}
    return dict(Session.objects.filter(session_id__in=session_ids).values_list("session_id", "user_id"))


def _session_fields(session: Session, *, with_vector: bool) -> dict:
    data = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "search_query": session.search_query,
        "has_query_vector": session.query_vector is not None,
        "search_meta": session.search_meta,
        "created_at": session.created_at,
        "received_at": session.received_at,
        "is_irrelevant": session.is_irrelevant,
        "improvement": {
            "status": session.improvement_status,
            "detail": session.improvement_detail,
            "attempts": session.attempts,
            "improved_at": session.improved_at,
        },
    }
    if with_vector:
        vector = session.query_vector
        data["query_vector"] = None if vector is None else [float(x) for x in vector]
    return data


def new_session_detail(*, session: Session, results: list, with_vector: bool = False) -> dict:
    """The API form of a session just registered (no events yet), built without a query."""
    data = _session_fields(session, with_vector=with_vector)
    data["search_results"] = [
        {"position": position, "object_id": r.object_id, "score": r.score, "meta": r.meta, "event_count": 0}
        for position, r in enumerate(results)
    ]
    data["event_count"] = 0
    data["events"] = []
    return data


def session_detail(*, session: Session, with_vector: bool = False) -> dict:
    """The API form of a stored session: shown results in order (with how many events each got),
    its events (the first MAX_EVENTS_SHOWN by time) and its improvement status."""
    per_object = (
        Event.objects.filter(session_id=OuterRef("session_id"), object_id=OuterRef("object_id"))
        .order_by()
        .values("object_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    results = (
        ShownResult.objects.filter(session=session)
        .annotate(event_count=Coalesce(Subquery(per_object, output_field=IntegerField()), Value(0)))
        .order_by("position")
        .values("position", "object_id", "score", "meta", "event_count")
    )
    events = (
        Event.objects.filter(session=session)
        .order_by("created_at", "id")
        .values("event_id", "object_id", "event_type", "created_at", "received_at", "meta")[:MAX_EVENTS_SHOWN]
    )
    data = _session_fields(session, with_vector=with_vector)
    data["search_results"] = list(results)
    data["event_count"] = Event.objects.filter(session=session).count()
    data["events"] = list(events)
    return data

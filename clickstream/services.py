"""Clickstream writes: registering sessions with their shown results, recording events, forgetting users.

Hot paths (sessions and events) write with one multi-row statement per batch
(``INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING``): never row by row,
and safe under concurrent identical requests, because PostgreSQL's unique indexes decide
which copy wins.

Query vectors: this app imports no embedder (``clickstream`` depends on no other app of ours), so a
session registered without ``query_vector`` keeps it NULL; the improvement run embeds missing
query vectors in bulk when it claims sessions and stores them with ``set_query_vectors``.

Everything that writes clickstream rows goes through this module, except the improvement
claimer's own status/lease/attempt updates.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from clickstream.models import ImprovementStatus, Session
from clickstream.validation import (
    EventInput,
    ItemError,
    SessionInput,
    SessionInvalid,
    ShownResultInput,
    validate_session,
)
from studio.vectors import InvalidVector, validate_vector

__all__ = [
    "EventsOutcome",
    "RegisterOutcome",
    "SessionConflict",
    "SessionInvalid",
    "ShownResultInput",
    "StoredSession",
    "delete_expired_sessions",
    "forget_user",
    "mark_irrelevant",
    "mark_sessions_irrelevant",
    "record_events",
    "register_session",
    "register_sessions",
    "requeue_sessions",
    "set_query_vectors",
]

CREATED = "created"
REPLAYED = "replayed"
CONFLICT = "conflict"


class SessionConflict(Exception):
    """The session_id exists with other content (HTTP 409)."""

    def __init__(self, session_id: str):
        super().__init__(f"session '{session_id}' already exists with other content")
        self.session_id = session_id


@dataclass
class RegisterOutcome:
    """What ``register_session`` did: ``status`` is ``created`` or ``replayed`` (identical content)."""

    session: Session
    status: str
    results: list[ShownResultInput] = field(default_factory=list)


@dataclass
class StoredSession:
    """Fate of item ``index`` of ``register_sessions``: created, replayed (identical) or conflict."""

    index: int
    session_id: str
    status: str
    pk: int | None


@dataclass
class EventsOutcome:
    """Per-batch result of ``record_events``: counts and the items refused, by request index."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[ItemError] = field(default_factory=list)


# --- sessions ---------------------------------------------------------------------------------

_INSERT_SESSIONS = """
WITH input AS (
    SELECT * FROM unnest(%(idx)s::int[], %(session_id)s::text[], %(user_id)s::text[], %(search_query)s::text[],
                         %(query_vector)s::text[], %(search_meta)s::text[], %(fingerprint)s::text[],
                         %(created_at)s::timestamptz[])
        AS t(idx, session_id, user_id, search_query, query_vector, search_meta, fingerprint, created_at)
), ins AS (
    INSERT INTO clickstream_session (session_id, user_id, search_query, query_vector, search_meta, fingerprint,
                                     created_at, received_at, is_irrelevant, improvement_status,
                                     improvement_detail, attempts)
    SELECT session_id, user_id, search_query, query_vector::vector, search_meta::jsonb, fingerprint,
           coalesce(created_at, %(now)s), %(now)s, false, 'pending', '', 0
    FROM input
    ORDER BY session_id  -- one lock order for every batch: concurrent overlapping batches cannot deadlock
    ON CONFLICT (session_id) DO NOTHING
    RETURNING id, session_id
), shown AS (
    INSERT INTO clickstream_shownresult (session_id, position, object_id, score, meta)
    SELECT ins.id, r.position, r.object_id, r.score, r.meta::jsonb
    FROM unnest(%(r_idx)s::int[], %(r_position)s::int[], %(r_object_id)s::text[], %(r_score)s::float8[],
                %(r_meta)s::text[]) AS r(idx, position, object_id, score, meta)
    JOIN input ON input.idx = r.idx
    JOIN ins ON ins.session_id = input.session_id
)
SELECT input.idx, ins.id, existing.id, existing.fingerprint
FROM input
LEFT JOIN ins ON ins.session_id = input.session_id
LEFT JOIN clickstream_session existing ON ins.id IS NULL AND existing.session_id = input.session_id
"""


def _vector_text(vector: list[float] | None) -> str | None:
    return None if vector is None else "[" + ",".join(map(repr, vector)) + "]"


def register_sessions(*, sessions: Sequence[SessionInput], now: datetime | None = None) -> list[StoredSession]:
    """Store validated sessions with their shown results in one statement; idempotent per ``session_id``.

    A session whose id exists with the same fingerprint is ``replayed`` (nothing written), with other
    content a ``conflict``. The same id twice in one call: the first decides, the second compares with it.
    Returns one StoredSession per input, in input order.
    """
    if not sessions:
        return []
    now = now or timezone.now()
    first_of: dict[str, int] = {}
    unique: list[int] = []
    for position, item in enumerate(sessions):
        if item.session_id not in first_of:
            first_of[item.session_id] = position
            unique.append(position)
    session_keys = ["idx", "session_id", "user_id", "search_query", "query_vector", "search_meta", "fingerprint"]
    result_keys = ["created_at", "r_idx", "r_position", "r_object_id", "r_score", "r_meta"]
    params: dict[str, list] = {key: [] for key in session_keys + result_keys}
    for position in unique:
        item = sessions[position]
        params["idx"].append(position)
        params["session_id"].append(item.session_id)
        params["user_id"].append(item.user_id)
        params["search_query"].append(item.search_query)
        params["query_vector"].append(_vector_text(item.query_vector))
        params["search_meta"].append(item.search_meta_json)
        params["fingerprint"].append(item.fingerprint)
        params["created_at"].append(item.created_at)
        for rank, (result, meta_json) in enumerate(zip(item.results, item.result_meta_json, strict=True)):
            params["r_idx"].append(position)
            params["r_position"].append(rank)
            params["r_object_id"].append(result.object_id)
            params["r_score"].append(result.score)
            params["r_meta"].append(meta_json)
    params["now"] = now
    with connection.cursor() as cursor:
        # One statement: atomic on its own, and inside a caller's transaction part of it.
        cursor.execute(_INSERT_SESSIONS, params)
        rows = cursor.fetchall()
        outcome: dict[int, tuple[str, int]] = {}
        unseen: list[int] = []
        for position, inserted_pk, existing_pk, existing_fingerprint in rows:
            if inserted_pk is not None:
                outcome[position] = (CREATED, inserted_pk)
            elif existing_pk is not None:
                same = existing_fingerprint == sessions[position].fingerprint
                outcome[position] = (REPLAYED if same else CONFLICT, existing_pk)
            else:
                unseen.append(position)
        if unseen:
            # Committed by a concurrent request after this statement's snapshot: look again.
            cursor.execute(
                "SELECT session_id, id, fingerprint FROM clickstream_session WHERE session_id = ANY(%s::text[])",
                [[sessions[p].session_id for p in unseen]],
            )
            found = {session_id: (pk, fingerprint) for session_id, pk, fingerprint in cursor.fetchall()}
            for position in unseen:
                pk, fingerprint = found[sessions[position].session_id]
                outcome[position] = (REPLAYED if fingerprint == sessions[position].fingerprint else CONFLICT, pk)
    stored = []
    for position, item in enumerate(sessions):
        first = first_of[item.session_id]
        status, pk = outcome[first]
        if first != position:
            status = CONFLICT if status == CONFLICT or item.fingerprint != sessions[first].fingerprint else REPLAYED
        stored.append(StoredSession(index=position, session_id=item.session_id, status=status, pk=pk))
    return stored


def register_session(
    *,
    session_id: str | None,
    user_id: str | None,
    search_query: str,
    query_vector: list[float] | None,
    results: list[ShownResultInput],
    search_meta: dict | None = None,
    created_at: datetime | None = None,
) -> RegisterOutcome:
    """Register one search session and the results it showed, in shown order.

    ``session_id=None`` generates one. Returns ``created``, or ``replayed`` with the stored session
    when the same content was registered before; raises SessionConflict when the id exists with
    other content and SessionInvalid (a ValueError naming the field) for bad input. A session
    without ``query_vector`` keeps it NULL until the improvement run embeds it.
    """
    now = timezone.now()
    item = validate_session(
        session_id=session_id if session_id is not None else uuid.uuid4().hex,
        user_id=user_id,
        search_query=search_query,
        query_vector=query_vector,
        results=results,
        search_meta=search_meta,
        created_at=created_at,
        now=now,
    )
    stored = register_sessions(sessions=[item], now=now)[0]
    if stored.status == CONFLICT:
        raise SessionConflict(item.session_id)
    if stored.status == REPLAYED:
        return RegisterOutcome(session=Session.objects.get(pk=stored.pk), status=REPLAYED)
    return RegisterOutcome(
        session=session_from_input(item=item, pk=stored.pk, now=now), status=CREATED, results=item.results
    )


def session_from_input(*, item: SessionInput, pk: int, now: datetime) -> Session:
    """The Session row just inserted for ``item``, built without reading it back."""
    return Session(
        pk=pk,
        session_id=item.session_id,
        user_id=item.user_id,
        search_query=item.search_query,
        query_vector=item.query_vector,
        search_meta=item.search_meta,
        fingerprint=item.fingerprint,
        created_at=item.created_at or now,
        received_at=now,
        is_irrelevant=False,
        improvement_status=ImprovementStatus.PENDING,
        improvement_detail="",
        attempts=0,
    )


# --- events -----------------------------------------------------------------------------------

_INSERT_EVENTS = """
WITH input AS (
    SELECT * FROM unnest(%(idx)s::int[], %(session_id)s::text[], %(event_id)s::text[], %(object_id)s::text[],
                         %(event_type)s::text[], %(created_at)s::timestamptz[], %(meta)s::text[])
        AS t(idx, session_id, event_id, object_id, event_type, created_at, meta)
), matched AS MATERIALIZED (
    SELECT input.*, s.id AS session_pk,
           EXISTS (SELECT 1 FROM clickstream_shownresult r
                   WHERE r.session_id = s.id AND r.object_id = input.object_id) AS shown
    FROM input LEFT JOIN clickstream_session s ON s.session_id = input.session_id
), ins AS (
    INSERT INTO clickstream_event (session_id, event_id, object_id, event_type, created_at, received_at, meta)
    SELECT session_pk, event_id, object_id, event_type, coalesce(created_at, %(now)s), %(now)s, meta::jsonb
    FROM matched
    WHERE shown
    ORDER BY session_pk, event_id  -- one lock order: overlapping concurrent batches cannot deadlock
    ON CONFLICT (session_id, event_id) DO NOTHING
    RETURNING session_id, event_id
)
SELECT matched.idx, matched.session_pk IS NOT NULL, matched.shown, ins.event_id IS NOT NULL
FROM matched LEFT JOIN ins ON ins.session_id = matched.session_pk AND ins.event_id = matched.event_id
"""


def record_events(*, events: Sequence[EventInput], now: datetime | None = None) -> EventsOutcome:
    """Store validated events in one statement; each is accepted, a duplicate, or rejected.

    An event whose ``(session, event_id)`` exists (or repeats an earlier item of this call) is a
    duplicate and changes nothing. Refused per item: an unknown session (``unknown_session``) and an
    ``object_id`` the session did not show (``object_not_shown``).
    """
    result = EventsOutcome()
    if not events:
        return result
    now = now or timezone.now()
    first_of: dict[tuple[str, str], EventInput] = {}
    repeats: list[tuple[EventInput, EventInput]] = []
    params: dict[str, list] = {
        key: [] for key in ["idx", "session_id", "event_id", "object_id", "event_type", "created_at", "meta"]
    }
    for event in events:
        key = (event.session_id, event.event_id)
        first = first_of.get(key)
        if first is not None:
            repeats.append((event, first))
            continue
        first_of[key] = event
        params["idx"].append(event.index)
        params["session_id"].append(event.session_id)
        params["event_id"].append(event.event_id)
        params["object_id"].append(event.object_id)
        params["event_type"].append(event.event_type)
        params["created_at"].append(event.created_at)
        params["meta"].append(event.meta_json)
    params["now"] = now
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENTS, params)
        rows = cursor.fetchall()
    by_index = {event.index: event for event in first_of.values()}
    refused: dict[int, ItemError] = {}
    for index, session_known, shown, inserted in rows:
        event = by_index[index]
        if inserted:
            result.accepted += 1
        elif not session_known:
            refused[index] = _event_error(event, "unknown_session", f"session_id: no session '{event.session_id}'")
        elif not shown:
            refused[index] = _event_error(
                event, "object_not_shown", f"object_id: '{event.object_id}' was not shown in this session"
            )
        else:
            result.duplicates += 1
    for event, first in repeats:
        if first.index in refused:
            result.rejected.append(
                _event_error(event, refused[first.index].code, f"repeats item {first.index}, which was refused")
            )
        else:
            result.duplicates += 1
    result.rejected.extend(refused.values())
    result.rejected.sort(key=lambda error: error.index)
    return result


def _event_error(event: EventInput, code: str, message: str) -> ItemError:
    return ItemError(index=event.index, item_id=event.event_id, code=code, message=message, session_id=event.session_id)


# --- session updates --------------------------------------------------------------------------


def mark_irrelevant(*, session_id: str) -> Session | None:
    """Mark a session irrelevant (it teaches nothing); idempotent. None if there is no such session."""
    updated = Session.objects.filter(session_id=session_id).update(is_irrelevant=True)
    if not updated:
        return None
    return Session.objects.get(session_id=session_id)


def mark_sessions_irrelevant(*, pks: Sequence[int]) -> int:
    """Mark sessions irrelevant by primary key (admin action); returns how many were changed."""
    return Session.objects.filter(pk__in=list(pks), is_irrelevant=False).update(is_irrelevant=True)


def requeue_sessions(*, pks: Sequence[int]) -> int:
    """Put sessions back in the improvement queue (admin action): pending, no lease, attempts reset.

    A session already ``done`` teaches again on the next run (learning accumulates).
    """
    return Session.objects.filter(pk__in=list(pks)).update(
        improvement_status=ImprovementStatus.PENDING, improvement_detail="", attempts=0, lease_until=None
    )


def set_query_vectors(*, vectors: dict[int, list[float]]) -> int:
    """Store query vectors by Session primary key (the improvement run embeds missing ones in bulk).

    Raises InvalidVector for a vector of the wrong dimension or not finite; returns rows updated.
    """
    if not vectors:
        return 0
    pks: list[int] = []
    texts: list[str] = []
    for pk, vector in vectors.items():
        try:
            texts.append(_vector_text(validate_vector(vector)))
        except InvalidVector as exc:
            raise InvalidVector(f"query vector of session {pk}: {exc}") from None
        pks.append(int(pk))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE clickstream_session AS s SET query_vector = v.vector::vector
            FROM unnest(%s::bigint[], %s::text[]) AS v(id, vector)
            WHERE s.id = v.id
            """,
            [pks, texts],
        )
        return cursor.rowcount


# --- deletion ---------------------------------------------------------------------------------

_DELETE_SESSIONS = """
WITH doomed AS MATERIALIZED ({select}),
events AS (DELETE FROM clickstream_event WHERE session_id IN (SELECT id FROM doomed) RETURNING 1),
results AS (DELETE FROM clickstream_shownresult WHERE session_id IN (SELECT id FROM doomed) RETURNING 1),
sessions AS (DELETE FROM clickstream_session WHERE id IN (SELECT id FROM doomed) RETURNING 1)
SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM results), (SELECT count(*) FROM events)
"""


def _delete_sessions(select_sql: str, params: list) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_SESSIONS.format(select=select_sql), params)
        sessions, results, events = cursor.fetchone()
    return {"sessions": sessions, "shown_results": results, "events": events}


@transaction.atomic
def forget_user(*, user_id: str) -> dict[str, int]:
    """Delete a user's sessions with their shown results and events; returns the counts deleted.

    Personalized vectors are not clickstream rows: ``DELETE /users/{user_id}`` removes those too.
    """
    return _delete_sessions("SELECT id FROM clickstream_session WHERE user_id = %s FOR UPDATE", [user_id])


def delete_expired_sessions(*, older_than: datetime, limit: int = 10_000) -> dict[str, int]:
    """Delete up to ``limit`` sessions received before ``older_than`` (retention, ``CLICKSTREAM_RETENTION_DAYS``),
    oldest first, with their results and events; call again until ``sessions`` is 0."""
    with transaction.atomic():
        return _delete_sessions(
            "SELECT id FROM clickstream_session WHERE received_at < %s ORDER BY received_at LIMIT %s "
            "FOR UPDATE SKIP LOCKED",
            [older_than, limit],
        )

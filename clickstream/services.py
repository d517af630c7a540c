"""Clickstream writes: registering sessions with their shown results, recording events, forgetting users.

Hot paths (sessions and events) write with one multi-row statement per batch
(``INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING``): never row by row,
and safe under concurrent identical requests, because PostgreSQL's unique indexes decide
which copy wins.

Query vectors: this app imports no embedder (``clickstream`` depends only on ``studio.core``), so a
session registered without ``query_vector`` keeps it NULL; the improvement run embeds missing
query vectors in bulk when it claims sessions and stores them with ``set_query_vectors``.

Everything that writes clickstream rows goes through this module, except the improvement
claimer's own status/lease/attempt updates.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
from studio.core.errors import DomainError
from studio.core.vectors import InvalidVector, validate_vector, vector_literal

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
    "purge_expired_sessions",
    "record_events",
    "register_session",
    "register_sessions",
    "requeue_sessions",
    "set_query_vectors",
]

CREATED = "created"
REPLAYED = "replayed"
CONFLICT = "conflict"


class SessionConflict(DomainError):
    """The session_id exists with other content (HTTP 409)."""

    code = "session_conflict"
    status_code = 409

    def __init__(self, session_id: str):
        super().__init__(f"session '{session_id}' already exists with other content", field="session_id")
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
WITH input AS MATERIALIZED (
    SELECT * FROM json_to_recordset(%(sessions)s::json)
        AS t(idx int, session_id text, user_id text, search_query text, query_vector text, search_meta jsonb,
             fingerprint text, created_at timestamptz)
), ins AS (
    INSERT INTO clickstream_session (session_id, user_id, search_query, query_vector, search_meta, fingerprint,
                                     created_at, received_at, is_irrelevant, improvement_status,
                                     improvement_detail, attempts)
    SELECT session_id, user_id, search_query, query_vector::vector, search_meta, fingerprint,
           coalesce(created_at, %(now)s), %(now)s, false, 'pending', '', 0
    FROM input
    ORDER BY session_id  -- one lock order for every batch: concurrent overlapping batches cannot deadlock
    ON CONFLICT (session_id) DO NOTHING
    RETURNING id, session_id
), shown AS (
    INSERT INTO clickstream_shownresult (session_id, position, object_id, score, meta)
    SELECT ins.id, r.position, r.object_id, r.score, r.meta
    FROM json_to_recordset(%(results)s::json) AS r(idx int, position int, object_id text, score float8, meta jsonb)
    JOIN input ON input.idx = r.idx
    JOIN ins ON ins.session_id = input.session_id
)
SELECT input.idx, ins.id, existing.id, existing.fingerprint
FROM input
LEFT JOIN ins ON ins.session_id = input.session_id
LEFT JOIN LATERAL (  -- index probes only for the ids that were not inserted
    SELECT id, fingerprint FROM clickstream_session
    WHERE ins.id IS NULL AND session_id = input.session_id LIMIT 1
) existing ON true
"""

# Rows travel as one JSON document per table (json_to_recordset): far cheaper to encode than one
# quoted array literal per column. ASCII-only output: validation already refused NULs and lone surrogates.
_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _insert_sessions(sessions: Sequence[SessionInput], positions: list[int], now: datetime) -> dict[int, tuple]:
    """One INSERT statement for ``sessions[p] for p in positions``; {position: (status, pk)} for those it
    resolved (a row committed concurrently, after the statement's snapshot, is left out)."""
    records = []
    results = []
    for position in positions:
        item = sessions[position]
        records.append(
            {
                "idx": position,
                "session_id": item.session_id,
                "user_id": item.user_id,
                "search_query": item.search_query,
                "query_vector": None if item.query_vector is None else vector_literal(item.query_vector),
                "search_meta": item.search_meta,
                "fingerprint": item.fingerprint,
                "created_at": item.created_at.isoformat() if item.created_at else None,
            }
        )
        for rank, result in enumerate(item.results):
            results.append(
                {
                    "idx": position,
                    "position": rank,
                    "object_id": result.object_id,
                    "score": result.score,
                    "meta": result.meta,
                }
            )
    with connection.cursor() as cursor:
        # One statement: atomic on its own, and inside a caller's transaction part of it.
        cursor.execute(_INSERT_SESSIONS, {"sessions": _json(records), "results": _json(results), "now": now})
        rows = cursor.fetchall()
    outcome = {}
    for position, inserted_pk, existing_pk, existing_fingerprint in rows:
        if inserted_pk is not None:
            outcome[position] = (CREATED, inserted_pk)
        elif existing_pk is not None:
            same = existing_fingerprint == sessions[position].fingerprint
            outcome[position] = (REPLAYED if same else CONFLICT, existing_pk)
    return outcome


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
    for position, item in enumerate(sessions):
        first_of.setdefault(item.session_id, position)
    pending = sorted(first_of.values())
    outcome: dict[int, tuple] = {}
    for _attempt in range(5):
        outcome.update(_insert_sessions(sessions, pending, now))
        # A row committed by a concurrent request after the statement's snapshot was neither inserted nor
        # seen: a new statement sees it (or, if it was deleted meanwhile, inserts ours).
        pending = [position for position in pending if position not in outcome]
        if not pending:
            break
    else:
        raise RuntimeError(f"could not settle sessions {[sessions[p].session_id for p in pending]}")
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
    SELECT * FROM json_to_recordset(%(events)s::json)
        AS t(idx int, session_id text, event_id text, object_id text, event_type text, created_at timestamptz,
             meta jsonb)
), matched AS MATERIALIZED (
    -- LATERAL … LIMIT 1: one unique-index probe per event, whatever the tables' size or statistics
    -- (a hashed EXISTS would scan every shown result ever stored).
    SELECT input.*, s.id AS session_pk, coalesce(r.shown, false) AS shown
    FROM input
    LEFT JOIN LATERAL (
        SELECT id FROM clickstream_session WHERE session_id = input.session_id LIMIT 1
    ) s ON true
    LEFT JOIN LATERAL (
        SELECT true AS shown FROM clickstream_shownresult
        WHERE session_id = s.id AND object_id = input.object_id LIMIT 1
    ) r ON true
), ins AS (
    INSERT INTO clickstream_event (session_id, event_id, object_id, event_type, created_at, received_at, meta)
    SELECT session_pk, event_id, object_id, event_type, coalesce(created_at, %(now)s), %(now)s, meta
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

    An event whose ``(session, event_id)`` exists with the same object and type (or repeats an
    earlier item of this call) is a duplicate and changes nothing. Refused per item: an unknown
    session (``unknown_session``), an ``object_id`` the session did not show (``object_not_shown``),
    and an ``event_id`` already used in the session for another object or type (``event_id_conflict``).
    """
    result = EventsOutcome()
    if not events:
        return result
    firsts, repeats = _split_repeats(events)
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_EVENTS, {"events": _json([_event_record(e) for e in firsts]), "now": now or timezone.now()}
        )
        rows = cursor.fetchall()
    by_index = {event.index: event for event in firsts}
    refused: dict[int, ItemError] = {}
    duplicates = []
    for index, session_known, shown, inserted in rows:
        problem = None if inserted else _event_problem(by_index[index], session_known=session_known, shown=shown)
        if problem is not None:
            refused[index] = problem
        elif inserted:
            result.accepted += 1
        else:
            duplicates.append(by_index[index])
    refused.update(_conflicting(duplicates))
    result.duplicates += len(duplicates) - sum(1 for event in duplicates if event.index in refused)
    for event, first in repeats:
        problem = _repeat_problem(event, first, refused)
        if problem is None:
            result.duplicates += 1
        else:
            result.rejected.append(problem)
    result.rejected = sorted([*result.rejected, *refused.values()], key=lambda error: error.index)
    return result


_STORED_EVENTS = """
SELECT s.session_id, e.event_id, e.object_id, e.event_type
FROM unnest(%s::text[], %s::text[]) AS k(session_id, event_id)
JOIN clickstream_session s ON s.session_id = k.session_id
JOIN clickstream_event e ON e.session_id = s.id AND e.event_id = k.event_id
"""


def _conflicting(duplicates: list[EventInput]) -> dict[int, ItemError]:
    """The duplicates whose stored event has another object or type (one query, only when there are any)."""
    if not duplicates:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_STORED_EVENTS, [[e.session_id for e in duplicates], [e.event_id for e in duplicates]])
        stored = {(sid, eid): (oid, kind) for sid, eid, oid, kind in cursor.fetchall()}
    message = "event_id: already recorded in this session for another object or event type"
    return {
        e.index: _event_error(e, "event_id_conflict", message)
        for e in duplicates
        if stored.get((e.session_id, e.event_id), (e.object_id, e.event_type)) != (e.object_id, e.event_type)
    }


def _repeat_problem(event: EventInput, first: EventInput, refused: dict[int, ItemError]) -> ItemError | None:
    """Why a repeat of an earlier item of the call is refused; None for a plain duplicate."""
    if first.index in refused:
        return _event_error(event, refused[first.index].code, f"repeats item {first.index}, which was refused")
    if (event.object_id, event.event_type) != (first.object_id, first.event_type):
        message = f"event_id: repeats item {first.index} with another object or event type"
        return _event_error(event, "event_id_conflict", message)
    return None


def _split_repeats(events: Sequence[EventInput]) -> tuple[list[EventInput], list[tuple[EventInput, EventInput]]]:
    """The first event of each (session, event_id), and each later one paired with its first."""
    first_of: dict[tuple[str, str], EventInput] = {}
    repeats = []
    for event in events:
        first = first_of.setdefault((event.session_id, event.event_id), event)
        if first is not event:
            repeats.append((event, first))
    return list(first_of.values()), repeats


def _event_record(event: EventInput) -> dict:
    return {
        "idx": event.index,
        "session_id": event.session_id,
        "event_id": event.event_id,
        "object_id": event.object_id,
        "event_type": event.event_type,
        "created_at": event.created_at.isoformat() if event.created_at else None,
        "meta": event.meta,
    }


def _event_problem(event: EventInput, *, session_known: bool, shown: bool) -> ItemError | None:
    """Why an event that was not inserted is refused; None for a duplicate of a stored event."""
    if not session_known:
        return _event_error(event, "unknown_session", f"session_id: no session '{event.session_id}'")
    if not shown:
        return _event_error(event, "object_not_shown", f"object_id: '{event.object_id}' was not shown in this session")
    return None


def _event_error(event: EventInput, code: str, message: str) -> ItemError:
    ids = {"event_id": event.event_id, "session_id": event.session_id}
    return ItemError(index=event.index, code=code, message=message, ids=ids)


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
            texts.append(_json(validate_vector(vector)))
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
    oldest first, with their results and events; call again until ``sessions`` is 0.

    Never mid-claim: a session an improvement run holds (``processing``) is left for a later pass,
    and rows locked by a concurrent writer are skipped."""
    with transaction.atomic():
        return _delete_sessions(
            "SELECT id FROM clickstream_session WHERE received_at < %s AND improvement_status <> 'processing' "
            "ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED",
            [older_than, limit],
        )


def purge_expired_sessions(
    *, retention_days: int, now: datetime | None = None, batch_size: int = 10_000, max_batches: int = 100
) -> dict[str, int]:
    """Retention: delete sessions (with results and events) received more than ``retention_days`` ago,
    in batches of ``batch_size`` (each its own short transaction), at most ``max_batches`` per call so
    that one pass stays bounded; the next periodic pass continues. Returns the totals deleted."""
    older_than = (now or timezone.now()) - timedelta(days=retention_days)
    totals = {"sessions": 0, "shown_results": 0, "events": 0, "batches": 0}
    for _ in range(max_batches):
        deleted = delete_expired_sessions(older_than=older_than, limit=batch_size)
        if not deleted["sessions"]:
            break
        totals["batches"] += 1
        for name in ("sessions", "shown_results", "events"):
            totals[name] += deleted[name]
    return totals

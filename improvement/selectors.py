"""Improvement reads: a claimed batch's inputs (in bulk, one query per table), runs, attempts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from improvement.models import ImprovementRun, RunStatus, RunTrigger
from studio.catalogue.personalization import binary_cursor, stack_vectors


@dataclass
class SessionRow:
    """What a run needs of one claimed session."""

    pk: int
    user_id: str
    search_query: str
    query_vector: np.ndarray | None  # None: not given at registration, to be embedded
    is_irrelevant: bool


@dataclass
class BatchInputs:
    """Everything a batch reads from the clickstream, keyed by session pk."""

    sessions: list[SessionRow]
    shown: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # pk → [(position, object_id)] in order
    events: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # pk → [(object_id, event_type)]


def batch_inputs(*, session_pks: Sequence[int]) -> BatchInputs:
    """Sessions, their shown results and their events: three queries for the whole batch."""
    pks = [int(pk) for pk in session_pks]
    with binary_cursor() as cursor:
        cursor.execute(
            "SELECT id, user_id, search_query, query_vector, is_irrelevant FROM clickstream_session "
            "WHERE id = ANY(%b::bigint[]) ORDER BY id",
            [pks],
        )
        rows = cursor.fetchall()
        given = [row for row in rows if row[3] is not None]
        stacked = stack_vectors([row[3] for row in given], settings.STUDIO_EMBEDDING_DIM)
        vectors = {row[0]: vector for row, vector in zip(given, stacked, strict=True)}
        sessions = [
            SessionRow(
                pk=int(pk),
                user_id=user_id,
                search_query=query or "",
                query_vector=vectors.get(pk),
                is_irrelevant=bool(irrelevant),
            )
            for pk, user_id, query, _vector, irrelevant in rows
        ]
        cursor.execute(
            "SELECT session_id, position, object_id FROM clickstream_shownresult "
            "WHERE session_id = ANY(%b::bigint[]) ORDER BY session_id, position",
            [pks],
        )
        shown: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for session_pk, position, object_id in cursor.fetchall():
            shown[session_pk].append((position, object_id))
        cursor.execute(
            "SELECT session_id, object_id, event_type FROM clickstream_event WHERE session_id = ANY(%b::bigint[])",
            [pks],
        )
        events: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for session_pk, object_id, event_type in cursor.fetchall():
            events[session_pk].append((object_id, event_type))
    return BatchInputs(sessions=sessions, shown=dict(shown), events=dict(events))


# The one rule for "ready for improvement", in SQL over clickstream_session: pending and received
# before %(before)s (the settle time; pass 'infinity' for "any time"). Anonymous sessions are ready too:
# they teach the shared tier (a user's sessions teach their copies and the shared tier). The claimer's
# partial index session_ready_idx covers the first term. Claims (improvement.services.claims), the beat's
# idle check, health and the evaluation use it.
READY_SESSION_SQL = "improvement_status = 'pending' AND received_at < %(before)s"
_COUNT_READY = f"SELECT count(*) FROM (SELECT 1 FROM clickstream_session WHERE {READY_SESSION_SQL} LIMIT %(limit)s) r"
_ANY_READY = f"SELECT EXISTS (SELECT 1 FROM clickstream_session WHERE {READY_SESSION_SQL})"


def ready_session_count(*, received_before: datetime | None = None, limit: int | None = None) -> int:
    """Sessions ready for improvement (received before ``received_before``; default: any time),
    counted up to ``limit`` (None: all) so that a huge backlog costs a bounded index scan."""
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_READY, {"before": received_before or "infinity", "limit": limit})
        return int(cursor.fetchone()[0])


def ready_session_exists(*, received_before: datetime | None = None) -> bool:
    """Whether any session is ready (cheap on any backlog: stops at the first index entry)."""
    with connection.cursor() as cursor:
        cursor.execute(_ANY_READY, {"before": received_before or "infinity"})
        return bool(cursor.fetchone()[0])


def expired_lease_exists() -> bool:
    """Whether some session's lease has run out (the reaper has work)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM clickstream_session "
            "WHERE improvement_status = 'processing' AND lease_until < clock_timestamp())"
        )
        return bool(cursor.fetchone()[0])


def active_demo_run(*, user_id: str) -> ImprovementRun | None:
    """The user's demo run that is queued or running, if any."""
    active = (RunStatus.QUEUED, RunStatus.RUNNING)
    runs = ImprovementRun.objects.filter(trigger=RunTrigger.DEMO, status__in=active, parameters__user_id=user_id)
    return runs.order_by("-pk").first()


def demo_run(*, run_id: int, user_id: str) -> ImprovementRun | None:
    """Demo run ``run_id`` if it is this user's; None otherwise."""
    return ImprovementRun.objects.filter(pk=run_id, trigger=RunTrigger.DEMO, parameters__user_id=user_id).first()


def run_list() -> QuerySet[ImprovementRun]:
    """All runs, newest first."""
    return ImprovementRun.objects.order_by("-created_at", "-pk")


def get_run(*, run_id: int) -> ImprovementRun | None:
    """One run, or None."""
    return ImprovementRun.objects.filter(pk=run_id).first()


def run_for_task(*, task_id: str) -> ImprovementRun | None:
    """The run a Celery task created before (a retried task finds it again)."""
    if not task_id:
        return None
    return ImprovementRun.objects.filter(task_id=task_id).order_by("pk").first()

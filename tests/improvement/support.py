"""Helpers shared by the improvement tests and the system tests that learn (holds no tests).

Data goes in through the real services (catalogue COPY, clickstream registration and events),
and rankings come out of the real search (``studio.catalogue.search.search_objects``, exact mode).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.utils import timezone

from clickstream import services as clickstream
from clickstream.models import Session
from clickstream.validation import parse_event_item, validate_session
from improvement import services as improvement_services
from improvement.models import ImprovementRun, RunTrigger
from studio.catalogue import services as catalogue

DIM = settings.STUDIO_EMBEDDING_DIM


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``n`` random unit vectors (n × D float32)."""
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(rng: np.random.Generator, center: np.ndarray, noise: float) -> np.ndarray:
    """A unit vector close to ``center``."""
    v = center + rng.normal(scale=noise, size=center.shape).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def load_catalogue(vectors: dict[str, np.ndarray]) -> None:
    """Originals with one part each, through the bulk loader."""
    catalogue.copy_objects(rows=[(oid, {"n": i}, "", [v.tolist()]) for i, (oid, v) in enumerate(vectors.items())])


def register(
    *,
    user_id: str | None,
    shown: list[str],
    query_vector: np.ndarray | None = None,
    query: str = "q",
    session_id: str | None = None,
) -> Session:
    """Register one session as the ingestion API would; returns the stored row."""
    now = timezone.now()
    item = validate_session(
        session_id=session_id or uuid.uuid4().hex,
        user_id=user_id,
        search_query=query,
        query_vector=None if query_vector is None else [float(x) for x in query_vector],
        results=[{"object_id": oid} for oid in shown],
        search_meta={},
        created_at=None,
        now=now,
    )
    stored = clickstream.register_sessions(sessions=[item], now=now)[0]
    return Session.objects.get(pk=stored.pk)


def click(session: Session, *object_ids: str, event_type: str = "click") -> None:
    """Record events on shown results of ``session``, validated as the ingestion API does."""
    now = timezone.now()
    events = [
        parse_event_item(
            {"event_id": uuid.uuid4().hex, "object_id": oid, "event_type": event_type},
            index=i,
            now=now,
            session_id=session.session_id,
        )
        for i, oid in enumerate(object_ids)
    ]
    outcome = clickstream.record_events(events=events, now=now)
    assert not outcome.rejected, outcome.rejected


def ranking(query_vector: np.ndarray, user_id: str | None, limit: int = 50) -> list[str]:
    """Object ids in the order ``user_id`` sees them for this query (exact search)."""
    from studio.catalogue.search import search_objects

    result = search_objects(query_vector=[float(x) for x in query_vector], user_id=user_id, limit=limit, exact=True)
    return [hit.object_id for hit in result.hits]


def original_parts() -> dict[tuple[str, int], np.ndarray]:
    """Every original part's vector, to prove runs never write originals."""
    from studio.models import ObjectPart

    return {
        (object_id, index): np.asarray(vector, dtype=np.float32)
        for object_id, index, vector in ObjectPart.objects.values_list("object__object_id", "index", "vector")
    }


def assert_same_parts(before: dict, after: dict) -> None:
    """Originals unchanged, bit for bit."""
    assert before.keys() == after.keys()
    for key, vector in before.items():
        np.testing.assert_array_equal(vector, after[key])


def run_improvement(**kwargs) -> ImprovementRun:
    """Create a command-triggered run and execute it in process; returns the finished run."""
    run = improvement_services.create_run(trigger=RunTrigger.COMMAND)
    return improvement_services.execute_run(run_id=run.pk, **kwargs)


def later() -> datetime:
    """A moment just after now: every session registered so far was received before it."""
    return timezone.now() + timedelta(seconds=1)


def two_learned_users() -> ImprovementRun:
    """Two users, each with a used session and personalized copies (needs ``IMPROVEMENT_SETTLE_SECONDS = 0``)."""
    rng = np.random.default_rng(11)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(5)})
    order = ranking(query, None)
    for user in ("ann", "ben"):
        click(register(user_id=user, shown=order, query_vector=query), order[3])
    return run_improvement()

"""Data lifecycle: sessions older than ``CLICKSTREAM_RETENTION_DAYS`` go, with their shown results
and events, in bounded batches, by a periodic task that a migration schedules; never mid-claim."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from clickstream import services
from clickstream.models import Event, Session, ShownResult
from tests.improvement.support import click, register

DIM = 384


def aged(session: Session, days: float) -> Session:
    """Pretend the session arrived ``days`` ago."""
    Session.objects.filter(pk=session.pk).update(received_at=timezone.now() - timedelta(days=days))
    return session


def clicked_session(user: str) -> Session:
    session = register(user_id=user, shown=["a", "b", "c"], query_vector=np.ones(DIM, dtype=np.float32))
    click(session, "b")
    return session


@pytest.fixture
def mixed(db):
    """Three expired sessions, one expired but claimed by a run, two recent ones."""
    old = [aged(clicked_session(f"old{i}"), 40) for i in range(3)]
    claimed = aged(clicked_session("claimed"), 40)
    Session.objects.filter(pk=claimed.pk).update(
        improvement_status="processing", lease_until=timezone.now() + timedelta(minutes=5)
    )
    recent = [clicked_session("new0"), aged(clicked_session("new1"), 29)]
    return old, claimed, recent


def test_expired_sessions_go_in_batches_with_their_rows_and_never_mid_claim(mixed):
    old, claimed, recent = mixed
    totals = services.purge_expired_sessions(retention_days=30, batch_size=2)

    assert totals == {"sessions": 3, "shown_results": 9, "events": 3, "batches": 2}
    assert not Session.objects.filter(pk__in=[s.pk for s in old]).exists()
    assert not ShownResult.objects.filter(session_id__in=[s.pk for s in old]).exists()
    assert not Event.objects.filter(session_id__in=[s.pk for s in old]).exists()
    assert Session.objects.filter(pk=claimed.pk, improvement_status="processing").exists()  # held by a run
    assert Session.objects.filter(pk__in=[s.pk for s in recent]).count() == 2
    assert ShownResult.objects.filter(session_id=recent[0].pk).count() == 3

    # Once the run lets go, the next pass takes it; another pass finds nothing (idempotent).
    Session.objects.filter(pk=claimed.pk).update(improvement_status="done", lease_until=None)
    assert services.purge_expired_sessions(retention_days=30)["sessions"] == 1
    assert services.purge_expired_sessions(retention_days=30)["sessions"] == 0


def test_a_pass_is_bounded(mixed):
    totals = services.purge_expired_sessions(retention_days=30, batch_size=1, max_batches=2)
    assert totals["sessions"] == 2 and totals["batches"] == 2
    assert services.purge_expired_sessions(retention_days=30, batch_size=1)["sessions"] == 1


def test_the_task_uses_the_retention_setting(mixed, settings):
    from clickstream.tasks import purge_expired_sessions

    settings.CLICKSTREAM_RETENTION_DAYS = 50
    assert purge_expired_sessions()["sessions"] == 0  # 40 days old is within 50
    settings.CLICKSTREAM_RETENTION_DAYS = 20
    assert purge_expired_sessions()["sessions"] == 4  # three of 40 days and one of 29; the claimed one stays


def test_a_migration_schedules_the_task_hourly(db):
    from django_celery_beat.models import PeriodicTask

    from clickstream.tasks import RETENTION_PERIODIC_TASK_NAME, RETENTION_TASK_NAME
    from studio.config.celery import app

    task = PeriodicTask.objects.get(name=RETENTION_PERIODIC_TASK_NAME)
    assert task.task == RETENTION_TASK_NAME and task.enabled
    assert (task.interval.every, task.interval.period) == (3600, "seconds")
    app.loader.import_default_modules()
    assert RETENTION_TASK_NAME in app.tasks


def test_retention_takes_the_improvement_attempts_of_purged_sessions(db):
    """Attempts of a purged session go with it (``ON DELETE CASCADE``): retention leaves no orphaned audit rows."""
    from improvement.models import ImprovementAttempt, ImprovementRun, RunTrigger

    old, recent = aged(clicked_session("old-attempted"), 40), clicked_session("new-attempted")
    run = ImprovementRun.objects.create(trigger=RunTrigger.API)
    for session in (old, recent):
        ImprovementAttempt.objects.create(
            session=session,
            user_id=session.user_id,
            run=run,
            claimed_at=timezone.now(),
            lease_until=timezone.now(),
            outcome="done",
        )

    assert services.purge_expired_sessions(retention_days=30)["sessions"] == 1
    assert list(ImprovementAttempt.objects.values_list("session_id", flat=True)) == [recent.pk]

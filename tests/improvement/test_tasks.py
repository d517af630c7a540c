"""improvement.tasks: the task's registration, and improvement end to end with real Celery workers (and beat)
on the real broker and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import psycopg
import pytest
from django.db import connection, transaction

from clickstream.models import Session
from improvement import services
from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus, RunTrigger
from improvement.schedule import PERIODIC_TASK_NAME, TASK_NAME, ensure_beat_schedule
from studio.models import PersonalizedObject
from tests.improvement.support import (
    assert_same_parts,
    click,
    load_catalogue,
    near,
    original_parts,
    ranking,
    register,
    unit,
)
from tests.support import ROOT, WORKER_ENV, subprocess_env, wait_for


def test_task_is_registered_with_limits_and_retries(settings):
    from studio.config.celery import app

    task = app.tasks[TASK_NAME]
    assert task.soft_time_limit == settings.IMPROVEMENT_TIME_LIMIT_SECONDS
    assert task.time_limit > task.soft_time_limit
    assert task.max_retries == settings.IMPROVEMENT_MAX_RETRIES
    from django.db import OperationalError

    assert OperationalError in task.autoretry_for


def finished(*run_ids):
    return all(ImprovementRun.objects.get(pk=pk).status in (RunStatus.SUCCEEDED, RunStatus.FAILED) for pk in run_ids)


def enqueue(trigger=RunTrigger.API) -> int:
    with transaction.atomic():
        return services.enqueue_run(trigger=trigger).pk


@pytest.fixture
def catalogue(transactional_db, settings):
    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    rng = np.random.default_rng(21)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(8)})
    return rng, query


@pytest.mark.slow
def test_beat_turns_a_click_into_a_personalized_ranking_and_keeps_it(catalogue, start_worker, celery_queue, tmp_path):
    rng, query = catalogue
    order = ranking(query, None)
    target = order[4]
    parts_before = original_parts()
    start_worker(**WORKER_ENV)
    # The migration's schedule (flushed by the previous transactional test, so ensured again), every second.
    ensure_beat_schedule()
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
    task.interval, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    task.save()
    log = (tmp_path / "beat.log").open("ab")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "studio", "beat", "--loglevel", "INFO"],
        cwd=tmp_path,
        env=subprocess_env(CELERY_TASK_DEFAULT_QUEUE=celery_queue, PYTHONPATH=str(ROOT), **WORKER_ENV),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        similarity = []
        for round_number in (1, 2):
            session = register(user_id="alice", shown=order[:6], query_vector=query)
            click(session, target)
            wait_for(
                lambda s=session: Session.objects.get(pk=s.pk).improvement_status == "done",
                what=f"round {round_number} to be learned",
            )
            copy = PersonalizedObject.objects.get(user_id="alice", original__object_id=target)
            vector = np.asarray(copy.parts.get().vector)
            similarity.append(float(vector @ query / np.linalg.norm(vector)))
            assert ranking(query, "alice").index(target) < 4
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
    # The second run starts from the first one's copy: never back below it (the pairwise rule stops
    # pushing once the preference holds, so it may also stay where it is).
    assert similarity[1] >= similarity[0] - 1e-6
    assert ranking(query, "bob") == order  # other users: unchanged
    assert ranking(query, None) == order  # anonymous: unchanged
    assert_same_parts(parts_before, original_parts())  # originals: never written
    runs = ImprovementRun.objects.filter(trigger=RunTrigger.BEAT, status=RunStatus.SUCCEEDED)
    assert sum(runs.values_list("used", flat=True)) == 2


@pytest.mark.slow
def test_two_workers_running_at_once_process_each_session_exactly_once(catalogue, start_worker):
    rng, query = catalogue
    order = ranking(query, None)
    users = [f"user{i}" for i in range(40)]
    for user in users:
        for _ in range(5):
            click(register(user_id=user, shown=order[:6], query_vector=near(rng, query, 0.1)), order[3])
    env = {**WORKER_ENV, "IMPROVEMENT_BATCH_SIZE": "10"}
    start_worker(**env)
    start_worker(**env)
    runs = [enqueue(), enqueue()]
    wait_for(lambda: finished(*runs), what="both runs")

    run_rows = ImprovementRun.objects.filter(pk__in=runs)
    assert all(r.status == RunStatus.SUCCEEDED for r in run_rows)
    assert sum(r.claimed for r in run_rows) == 200
    assert all(r.claimed > 0 for r in run_rows), "both runs worked concurrently"
    assert Session.objects.exclude(improvement_status="done").count() == 0
    attempts = list(ImprovementAttempt.objects.all())
    assert len(attempts) == 200  # one attempt per session: none processed twice
    assert {a.outcome for a in attempts} == {AttemptOutcome.DONE}
    # No user was held by both runs at the same time.
    by_user = defaultdict(list)
    for a in attempts:
        by_user[a.user_id].append(a)
    for user, user_attempts in by_user.items():
        for a in user_attempts:
            for b in user_attempts:
                if a.run_id != b.run_id:
                    assert a.finished_at <= b.claimed_at or b.finished_at <= a.claimed_at, user
    # Each copy counts the runs that touched it.
    for copy in PersonalizedObject.objects.filter(original__object_id=order[3]):
        runs_of_user = {a.run_id for a in by_user[copy.user_id]}
        assert copy.updates == len(runs_of_user)


@pytest.mark.slow
def test_a_worker_killed_after_claiming_leaves_sessions_the_reaper_returns(catalogue, start_worker):
    rng, query = catalogue
    order = ranking(query, None)
    for user in ("u1", "u2", "u3"):
        click(register(user_id=user, shown=order[:6], query_vector=query), order[2])
    doomed = start_worker(**WORKER_ENV, IMPROVEMENT_LEASE_SECONDS="3")  # a short lease, so the test is quick

    # Hold a lock the batch needs right after its claim commits, so the kill lands mid-batch.
    params = connection.get_connection_params()
    blocker = psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
    try:
        blocker.execute("LOCK TABLE studio_personalizedobject IN ACCESS EXCLUSIVE MODE")
        killed_run = enqueue()
        wait_for(
            lambda: Session.objects.filter(improvement_status="processing").count() == 3,
            what="the claim",
        )
        doomed.kill(signal.SIGKILL)
    finally:
        blocker.rollback()
        blocker.close()
    assert Session.objects.filter(improvement_status="processing").count() == 3
    assert not PersonalizedObject.objects.exists()

    time.sleep(3.2)  # the lease runs out
    start_worker(**WORKER_ENV)  # the default lease: a cold worker's first batch may take seconds
    next_run = enqueue()
    wait_for(lambda: finished(next_run), what="the next run")

    assert ImprovementRun.objects.get(pk=next_run).used == 3
    assert ImprovementRun.objects.get(pk=killed_run).status == RunStatus.RUNNING  # its task was never acked
    for session in Session.objects.all():
        assert (session.improvement_status, session.attempts) == ("done", 1)
        outcomes = list(
            ImprovementAttempt.objects.filter(session=session).order_by("claimed_at").values_list("run_id", "outcome")
        )
        assert outcomes == [(killed_run, AttemptOutcome.EXPIRED), (next_run, AttemptOutcome.DONE)]
    assert ranking(query, "u1").index(order[2]) < 2

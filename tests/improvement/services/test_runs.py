"""improvement.services.runs: runs in process against the real database — a click moves the clicked object
up for that user only, learning accumulates, errors give the batch back, retries finish, beat runs only with
work. (Claims are in test_claims, batches in test_batch, the Celery worker tests in tests.improvement.test_tasks.)"""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.test.utils import override_settings

from clickstream.models import Session
from improvement import services
from improvement.models import AttemptOutcome, ImprovementAttempt, RunStatus, RunTrigger
from improvement.services import runs
from studio.models import PersonalizedObject
from tests.improvement.support import (
    assert_same_parts,
    click,
    later,
    load_catalogue,
    near,
    original_parts,
    ranking,
    register,
    run_improvement,
    unit,
)
from tests.support import wait_for


@pytest.fixture(params=["pairwise", "seed"])
def rule(request, settings):
    """Each learning rule with its default learning rate (the pairwise rule is the default)."""
    settings.IMPROVEMENT_RULE = request.param
    settings.IMPROVEMENT_LR = {"pairwise": 0.3, "seed": 1e-3}[request.param]
    return request.param


@pytest.fixture
def seed_rule(settings):
    """The seed rule (AdamW on the cubic loss), as the first version ran it."""
    settings.IMPROVEMENT_RULE = "seed"
    settings.IMPROVEMENT_LR = 1e-3


def test_a_click_moves_the_clicked_object_up_for_that_user_only(world, rule):
    query = world["query"]
    order = ranking(query, None)
    target = order[3]
    before_parts = original_parts()
    session = register(user_id="alice", shown=order[:6], query_vector=query)
    click(session, target)
    run = run_improvement()

    assert run.status == RunStatus.SUCCEEDED
    assert (run.claimed, run.used, run.failed) == (1, 1, 0)
    assert run.objects_personalized >= 1
    assert ranking(query, "alice").index(target) < 3
    assert ranking(query, "bob") == order
    assert ranking(query, None) == order
    assert_same_parts(before_parts, original_parts())
    session.refresh_from_db()
    assert session.improvement_status == "done" and session.lease_until is None
    assert session.improvement_detail.startswith("learned from 1 click")
    assert run.metrics["clicked_rank_before"] == 4.0
    assert run.metrics["clicked_rank_after"] < 4.0
    assert run.metrics["clicked_similarity_change"] > 0
    assert run.metrics["pushed_similarity_change"] < 0  # above_last_click pushes the three above
    assert 0 < run.metrics["drift_max"] <= 0.05 + 1e-4
    assert run.sessions_per_second > 0 and run.duration_seconds > 0
    assert run.parameters["negatives"] == "above_last_click" and run.parameters["rule"] == rule
    copy = PersonalizedObject.objects.get(user_id="alice", original__object_id=target)
    assert copy.object_id == f"{target}_alice" and copy.updates == 1 and copy.last_run == run.pk
    attempt = ImprovementAttempt.objects.get(session=session)
    assert (attempt.outcome, attempt.run_id) == (AttemptOutcome.DONE, run.pk)


def test_learning_accumulates_over_runs_under_the_seed_rule(world, seed_rule):
    query = world["query"]
    order = ranking(query, None)
    target = order[5]
    similarities = []
    for _ in range(2):
        session = register(user_id="alice", shown=order[:6], query_vector=query)
        click(session, target)
        run_improvement()
        copy = PersonalizedObject.objects.get(user_id="alice", original__object_id=target)
        vector = np.asarray(copy.parts.get().vector)
        similarities.append(float(vector @ query / np.linalg.norm(vector)))
    assert similarities[1] > similarities[0]
    assert copy.updates == 2


def test_an_error_mid_run_gives_the_batch_back(world):
    order = ranking(world["query"], None)
    click(register(user_id="u", shown=order[:4], query_vector=world["query"]), order[3])

    def broken_everywhere(**kwargs):
        raise KeyboardInterrupt  # not an adjuster fault: the run stops and hands its batch back

    run = services.create_run(trigger=RunTrigger.COMMAND)
    with pytest.raises(KeyboardInterrupt):
        services.execute_run(run_id=run.pk, adjust=broken_everywhere)
    session = Session.objects.get()
    assert (session.improvement_status, session.attempts) == ("pending", 1)
    assert ImprovementAttempt.objects.get().outcome == AttemptOutcome.RELEASED
    assert run_improvement().used == 1


def test_a_retried_run_gives_back_its_earlier_claim_and_finishes(world):
    order = ranking(world["query"], None)
    click(register(user_id="u", shown=order[:4], query_vector=world["query"]), order[3])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    runs._begin_run(run.pk, services.adjuster_params())
    services.claim_batch(run_id=run.pk, received_before=later())  # … then the worker lost the database
    run = services.execute_run(run_id=run.pk)  # the task's retry
    assert run.status == RunStatus.SUCCEEDED and run.used == 1
    assert sorted(ImprovementAttempt.objects.values_list("outcome", flat=True)) == ["done", "released"]
    assert services.execute_run(run_id=run.pk).used == 1  # a finished run is not run again


def test_beat_creates_a_run_only_when_there_is_work(world):
    assert services.run_for_beat(task_id="t1") is None
    order = list(world["vectors"])
    click(register(user_id="u", shown=order[:2], query_vector=world["query"]), order[0])
    run = services.run_for_beat(task_id="t2")
    assert run.trigger == RunTrigger.BEAT
    assert services.run_for_beat(task_id="t2") == run  # the task's retry continues the same run


def test_a_run_that_cannot_start_is_marked_failed_not_left_queued(db):
    run = services.create_run(trigger=RunTrigger.API)
    with pytest.raises(Exception):  # noqa: B017  PostgreSQL refuses the NUL in the run's recorded scope
        services.execute_run(run_id=run.pk, settle_seconds=0, user_id="a\x00b")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("could not start")


# --- read-ahead: the next batch is claimed and read in a second thread (needs committed rows) ---------------


@pytest.fixture
def committed_world(transactional_db, settled):
    """The ``world`` catalogue, committed, with batches of two sessions so that a run has several."""
    settled.IMPROVEMENT_BATCH_SIZE = 2
    settled.IMPROVEMENT_READ_AHEAD = True
    rng = np.random.default_rng(7)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(6)})
    return query


def test_read_ahead_processes_every_batch_once_even_when_one_user_fills_several(committed_world):
    """Claims skip users whose batch is in flight, so a read-ahead claim can come back empty while that user
    still has sessions: the run must claim again after the write instead of ending early."""
    order = ranking(committed_world, None)
    for _ in range(5):
        click(register(user_id="solo", shown=order, query_vector=committed_world), order[3])
    run = run_improvement()
    assert (run.status, run.claimed, run.used) == (RunStatus.SUCCEEDED, 5, 5)
    assert set(Session.objects.values_list("improvement_status", flat=True)) == {"done"}
    assert ImprovementAttempt.objects.filter(outcome=AttemptOutcome.DONE).count() == 5
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"solo"}


def test_a_failing_batch_also_gives_back_the_batch_read_ahead(committed_world):
    order = ranking(committed_world, None)
    for n in range(4):
        click(register(user_id=f"u{n}", shown=order, query_vector=committed_world), order[3])

    def broken_once_the_next_batch_is_claimed(**kwargs):
        wait_for(lambda: ImprovementAttempt.objects.count() == 4, timeout=30, what="the read-ahead claim")
        raise KeyboardInterrupt

    run = services.create_run(trigger=RunTrigger.COMMAND)
    with pytest.raises(KeyboardInterrupt):
        services.execute_run(run_id=run.pk, adjust=broken_once_the_next_batch_is_claimed)
    assert set(Session.objects.values_list("improvement_status", flat=True)) == {"pending"}
    assert set(ImprovementAttempt.objects.values_list("outcome", flat=True)) == {AttemptOutcome.RELEASED}
    assert ImprovementAttempt.objects.count() == 4  # both batches were claimed: the second one ahead
    assert run_improvement().used == 4


def test_a_session_limit_holds_with_read_ahead(committed_world):
    order = ranking(committed_world, None)
    for n in range(5):
        click(register(user_id=f"u{n}", shown=order, query_vector=committed_world), order[3])
    run = services.execute_run(run_id=services.create_run(trigger=RunTrigger.COMMAND).pk, session_limit=3)
    assert run.claimed == 3 and "limit of 3 sessions" in run.error
    assert Session.objects.filter(improvement_status="pending").count() == 2


def test_no_batch_is_read_ahead_beside_one_holding_a_session_given_back_after_a_crash(committed_world):
    """If that session crashes the process again, a batch read ahead beside it would pay an attempt too."""
    from improvement.learning.adjuster import adjust

    order = ranking(committed_world, None)
    crashed_run = services.create_run(trigger=RunTrigger.COMMAND)
    click(register(user_id="crashed", shown=order, query_vector=committed_world), order[3])
    services.release_claim(claim=services.claim_batch(run_id=crashed_run.pk, received_before=later()), reason="crash")
    click(register(user_id="fresh", shown=order, query_vector=committed_world), order[3])
    claimed_while_retried_batch_adjusts = []

    def watching(**kwargs):
        if not claimed_while_retried_batch_adjusts:
            time.sleep(1.0)  # time for a read-ahead claim, were one started
            fresh_claims = ImprovementAttempt.objects.filter(session__user_id="fresh").count()
            claimed_while_retried_batch_adjusts.append(fresh_claims)
        return adjust(**kwargs)

    with override_settings(IMPROVEMENT_BATCH_SIZE=1):
        run = services.execute_run(run_id=services.create_run(trigger=RunTrigger.COMMAND).pk, adjust=watching)
    assert run.used == 2 and claimed_while_retried_batch_adjusts == [0]

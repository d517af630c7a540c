"""Improvement runs in process against the real database: claiming, leases, the reaper, fencing,
skip and failure reasons, writing, metrics. (The Celery worker tests are in test_improvement_worker.)"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection, connections
from django.utils import timezone

from clickstream.models import Session
from improvement import services
from improvement.learning import adjuster
from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus, RunTrigger
from improvement.services import runs
from studio.models import PersonalizedObject
from tests.test_improvement_helpers import (
    assert_same_parts,
    click,
    load_catalogue,
    near,
    original_parts,
    ranking,
    register,
    unit,
)


@pytest.fixture
def settled(settings):
    """Sessions count as settled at once."""
    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    return settings


@pytest.fixture
def world(db, settled):
    """Six objects around a query direction, one user session clicking the 4th-ranked object."""
    rng = np.random.default_rng(7)
    query = unit(rng)[0]
    vectors = {f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(6)}
    load_catalogue(vectors)
    return {"rng": rng, "query": query, "vectors": vectors}


def _run(**kwargs) -> ImprovementRun:
    run = services.create_run(trigger=RunTrigger.COMMAND)
    return services.execute_run(run_id=run.pk, **kwargs)


def _later() -> timezone.datetime:
    return timezone.now() + timedelta(seconds=1)


def test_a_click_moves_the_clicked_object_up_for_that_user_only(world):
    query = world["query"]
    order = ranking(query, None)
    target = order[3]
    before_parts = original_parts()
    session = register(user_id="alice", shown=order[:6], query_vector=query)
    click(session, target)
    run = _run()

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
    assert run.parameters["negatives"] == "above_last_click" and run.parameters["lr"] == pytest.approx(1e-3)
    copy = PersonalizedObject.objects.get(user_id="alice", original__object_id=target)
    assert copy.object_id == f"{target}_alice" and copy.updates == 1 and copy.last_run == run.pk
    attempt = ImprovementAttempt.objects.get(session=session)
    assert (attempt.outcome, attempt.run_id) == (AttemptOutcome.DONE, run.pk)


def test_learning_accumulates_over_runs(world):
    query = world["query"]
    order = ranking(query, None)
    target = order[5]
    similarities = []
    for _ in range(2):
        session = register(user_id="alice", shown=order[:6], query_vector=query)
        click(session, target)
        _run()
        copy = PersonalizedObject.objects.get(user_id="alice", original__object_id=target)
        vector = np.asarray(copy.parts.get().vector)
        similarities.append(float(vector @ query / np.linalg.norm(vector)))
    assert similarities[1] > similarities[0]
    assert copy.updates == 2


def test_skip_reasons_are_recorded(world, settings):
    settings.IMPROVEMENT_EVENT_WEIGHTS = {"click": 1.0}
    order = list(world["vectors"])
    q = world["query"]
    irrelevant = register(user_id="u", shown=order[:3], query_vector=q)
    click(irrelevant, order[0])
    Session.objects.filter(pk=irrelevant.pk).update(is_irrelevant=True)
    register(user_id="u2", shown=order[:3], query_vector=q)  # no event at all
    hover = register(user_id="u3", shown=order[:3], query_vector=q)
    click(hover, order[1], event_type="hover")  # unknown type: ignored
    gone = register(user_id="u4", shown=["ghost1", "ghost2"], query_vector=q)
    click(gone, "ghost1")
    clicked_gone = register(user_id="u5", shown=[order[0], "ghost3"], query_vector=q)
    click(clicked_gone, "ghost3")
    register(user_id=None, shown=order[:3], query_vector=q)  # anonymous: never claimed

    run = _run()
    assert run.claimed == 5 and run.used == 0
    assert run.skipped == {"irrelevant": 1, "no_click": 2, "objects_gone": 1, "clicked_objects_gone": 1}
    statuses = dict(Session.objects.values_list("user_id", "improvement_status"))
    assert statuses == {**dict.fromkeys(("u", "u2", "u3", "u4", "u5"), "skipped"), None: "pending"}
    assert "deleted" in Session.objects.get(pk=gone.pk).improvement_detail
    assert not PersonalizedObject.objects.exists()
    assert set(ImprovementAttempt.objects.values_list("outcome", flat=True)) == {AttemptOutcome.SKIPPED}


def test_event_weights_admit_listed_types(world, settings):
    settings.IMPROVEMENT_EVENT_WEIGHTS = {"click": 1.0, "purchase": 3.0}
    order = ranking(world["query"], None)
    session = register(user_id="u", shown=order[:4], query_vector=world["query"])
    click(session, order[2], event_type="purchase")
    assert _run().used == 1


def test_a_poison_session_fails_alone(world):
    order = ranking(world["query"], None)
    good = register(user_id="good", shown=order[:4], query_vector=world["query"])
    click(good, order[3])
    no_query = register(user_id="nq", shown=order[:4], query="")
    click(no_query, order[3])
    zero = register(user_id="zero", shown=order[:4], query_vector=np.zeros(len(world["query"])))
    click(zero, order[3])

    run = _run()
    assert (run.claimed, run.used, run.failed) == (3, 1, 2)
    assert run.metrics["failed_by_reason"] == {"no_query": 1, "bad_query_vector": 1}
    rows = {s.user_id: s for s in Session.objects.all()}
    assert rows["good"].improvement_status == "done"
    assert rows["nq"].improvement_status == "failed" and "no query" in rows["nq"].improvement_detail
    assert rows["zero"].improvement_status == "failed" and "zero length" in rows["zero"].improvement_detail
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"good"}


def test_an_extreme_learning_rate_fails_sessions_and_writes_no_non_finite_vector(world, settings):
    settings.IMPROVEMENT_LR = 1e38
    settings.IMPROVEMENT_RENORMALIZE = False
    settings.IMPROVEMENT_MAX_DRIFT = None
    order = ranking(world["query"], None)
    click(register(user_id="u", shown=order[:4], query_vector=world["query"]), order[3])
    run = _run()
    assert (run.claimed, run.used, run.failed) == (1, 0, 1)
    session = Session.objects.get()
    assert session.improvement_status == "failed" and "non-finite" in session.improvement_detail
    assert not PersonalizedObject.objects.exists()


def test_an_adjuster_error_is_isolated_to_the_session_causing_it(world):
    order = ranking(world["query"], None)
    poison = world["query"] * -1  # the injected fault below recognizes this query
    sessions = []
    for user in ("a", "b", "c"):
        for query in (world["query"], poison if user == "b" else world["query"]):
            s = register(user_id=user, shown=order[:4], query_vector=query)
            click(s, order[3])
            sessions.append(s)

    def faulty(*, objects, sessions, params, **kwargs):
        if any(np.allclose(s.query, poison) for s in sessions):
            raise RuntimeError("boom")
        return adjuster.adjust(objects=objects, sessions=sessions, params=params, **kwargs)

    run = _run(adjust=faulty)
    assert (run.claimed, run.used, run.failed) == (6, 5, 1)
    failed = Session.objects.get(improvement_status="failed")
    assert failed.user_id == "b" and "boom" in failed.improvement_detail
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"a", "b", "c"}


def test_missing_query_vectors_are_embedded_and_stored(world):
    order = ranking(world["query"], None)
    session = register(user_id="u", shown=order[:3], query="funny space movies")
    click(session, order[2])
    run = _run()
    assert run.used == 1
    session.refresh_from_db()
    assert session.query_vector is not None
    assert abs(np.linalg.norm(np.asarray(session.query_vector)) - 1.0) < 1e-4


def test_claim_takes_whole_users_and_records_attempts(world):
    shown = list(world["vectors"])[:2]
    for user in ("u1", "u1", "u2", "u3"):
        click(register(user_id=user, shown=shown, query_vector=world["query"]), shown[0])
    run_a = services.create_run(trigger=RunTrigger.COMMAND)
    run_b = services.create_run(trigger=RunTrigger.COMMAND)

    first = services.claim_batch(run_id=run_a.pk, received_before=_later(), batch_size=1)
    assert list(first.users.values()) == ["u1"]
    # u1's second session is ready, but u1 is held by run A: run B gets the others only
    second = services.claim_batch(run_id=run_b.pk, received_before=_later(), batch_size=10)
    assert sorted(second.users.values()) == ["u2", "u3"]
    assert services.claim_batch(run_id=run_b.pk, received_before=_later(), batch_size=10) is None

    attempts = ImprovementAttempt.objects.filter(run=run_b)
    assert attempts.count() == 2
    assert {a.lease_until for a in attempts} == {second.lease_until}
    assert second.lease_until != first.lease_until
    held = Session.objects.filter(improvement_status="processing")
    assert {s.lease_until for s in held if s.user_id != "u1"} == {second.lease_until}


def test_unsettled_and_anonymous_sessions_are_not_claimed(world, settings):
    shown = list(world["vectors"])[:2]
    click(register(user_id="u", shown=shown, query_vector=world["query"]), shown[0])
    click(register(user_id=None, shown=shown, query_vector=world["query"]), shown[0])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    assert services.claim_batch(run_id=run.pk, received_before=timezone.now() - timedelta(minutes=1)) is None
    claim = services.claim_batch(run_id=run.pk, received_before=_later())
    assert list(claim.users.values()) == ["u"]


def test_concurrent_claimers_never_hold_the_same_user(transactional_db, settled):
    rng = np.random.default_rng(3)
    load_catalogue({"a": unit(rng)[0], "b": unit(rng)[0]})
    users = [f"user{i}" for i in range(12)]
    for user in users:
        for _ in range(4):
            click(register(user_id=user, shown=["a", "b"], query_vector=unit(rng)[0]), "a")
    runs = [services.create_run(trigger=RunTrigger.COMMAND).pk for _ in range(4)]
    claims: dict[int, list] = {run: [] for run in runs}
    errors = []

    def claimer(run_id):
        try:
            while True:
                claim = services.claim_batch(run_id=run_id, received_before=_later(), batch_size=3)
                if claim is None:
                    break
                claims[run_id].append(claim)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    owner: dict[str, int] = {}
    claimed_sessions = []
    for run_id, run_claims in claims.items():
        for claim in run_claims:
            claimed_sessions += claim.session_pks
            for user in claim.users.values():
                assert owner.setdefault(user, run_id) == run_id, f"{user} claimed by two runs"
    assert len(claimed_sessions) == len(set(claimed_sessions))
    # Nobody finished, so each user's first claimer holds them: exactly one run per user.
    assert set(owner) == set(users)
    assert ImprovementAttempt.objects.count() == len(claimed_sessions)


def test_reaper_returns_expired_leases_then_fails_after_max_attempts(world, settings):
    settings.IMPROVEMENT_MAX_ATTEMPTS = 2
    shown = list(world["vectors"])[:2]
    session = register(user_id="u", shown=shown, query_vector=world["query"])
    click(session, shown[0])
    run = services.create_run(trigger=RunTrigger.COMMAND)

    assert services.claim_batch(run_id=run.pk, received_before=_later(), lease_seconds=0)
    assert services.reap_expired_leases()["returned"] == 1
    session.refresh_from_db()
    assert (session.improvement_status, session.attempts, session.lease_until) == ("pending", 1, None)
    assert "lease expired" in session.improvement_detail

    assert services.claim_batch(run_id=run.pk, received_before=_later(), lease_seconds=0)
    assert services.reap_expired_leases()["failed"] == 1
    session.refresh_from_db()
    assert (session.improvement_status, session.attempts) == ("failed", 2)
    assert list(ImprovementAttempt.objects.values_list("outcome", flat=True)) == ["expired", "expired"]


def test_a_batch_whose_lease_was_lost_writes_nothing_and_is_redone_once(world):
    order = ranking(world["query"], None)
    session = register(user_id="u", shown=order[:4], query_vector=world["query"])
    click(session, order[3])
    slow = services.create_run(trigger=RunTrigger.COMMAND)
    claim = services.claim_batch(run_id=slow.pk, received_before=_later(), lease_seconds=1)
    time.sleep(1.2)  # the slow run stalls past its lease …
    rescuer = _run()  # … the next run reaps and finishes the session
    assert rescuer.used == 1
    written = dict(PersonalizedObject.objects.values_list("pk", "updated_at"))
    assert written

    with pytest.raises(services.LeaseLost):  # … and the slow run's late write is fenced off
        services.process_claim(claim=claim, params=services.adjuster_params())
    assert dict(PersonalizedObject.objects.values_list("pk", "updated_at")) == written
    outcomes = sorted(ImprovementAttempt.objects.values_list("run_id", "outcome"))
    assert outcomes == [(slow.pk, "expired"), (rescuer.pk, "done")]
    session.refresh_from_db()
    assert (session.improvement_status, session.attempts) == ("done", 1)


def test_a_user_forgotten_during_a_batch_gets_no_copies(world):
    order = ranking(world["query"], None)
    for user in ("stay", "leave"):
        click(register(user_id=user, shown=order[:4], query_vector=world["query"]), order[3])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    runs._begin_run(run.pk, services.adjuster_params())
    claim = services.claim_batch(run_id=run.pk, received_before=_later())
    counts = services.forget_user(user_id="leave")
    assert counts["sessions"] == 1 and counts["improvement_attempts"] == 1
    report = services.process_claim(claim=claim, params=services.adjuster_params())
    assert report.used == 1 and report.failed_reasons == {"session_deleted": 1}
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"stay"}


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
    assert _run().used == 1


def test_a_retried_run_gives_back_its_earlier_claim_and_finishes(world):
    order = ranking(world["query"], None)
    click(register(user_id="u", shown=order[:4], query_vector=world["query"]), order[3])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    runs._begin_run(run.pk, services.adjuster_params())
    services.claim_batch(run_id=run.pk, received_before=_later())  # … then the worker lost the database
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


def test_manage_py_improve_runs_in_the_foreground(world):
    from io import StringIO

    from django.core.management import call_command

    order = ranking(world["query"], None)
    click(register(user_id="u", shown=order[:4], query_vector=world["query"]), order[3])
    out = StringIO()
    call_command("improve", stdout=out, verbosity=0)
    run = ImprovementRun.objects.get()
    assert run.trigger == RunTrigger.COMMAND and run.used == 1
    assert f"run {run.pk} succeeded" in out.getvalue()


def test_partial_index_serves_the_claim(world):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM clickstream_session WHERE improvement_status = 'pending' "
            "AND user_id IS NOT NULL AND received_at < now() ORDER BY received_at LIMIT 10"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "session_pending_claim_idx" in plan

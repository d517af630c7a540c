"""improvement.services.claims: claiming whole users under a lease, the reaper, the partial index that serves
the claim."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
from django.db import connection, connections
from django.utils import timezone

from clickstream.models import Session
from improvement import services
from improvement.models import ImprovementAttempt, RunTrigger
from tests.improvement.support import click, later, load_catalogue, register, unit


def test_claim_takes_whole_users_and_records_attempts(world):
    shown = list(world["vectors"])[:2]
    for user in ("u1", "u1", "u2", "u3"):
        click(register(user_id=user, shown=shown, query_vector=world["query"]), shown[0])
    run_a = services.create_run(trigger=RunTrigger.COMMAND)
    run_b = services.create_run(trigger=RunTrigger.COMMAND)

    first = services.claim_batch(run_id=run_a.pk, received_before=later(), batch_size=1)
    assert list(first.users.values()) == ["u1"]
    # u1's second session is ready, but u1 is held by run A: run B gets the others only
    second = services.claim_batch(run_id=run_b.pk, received_before=later(), batch_size=10)
    assert sorted(second.users.values()) == ["u2", "u3"]
    assert services.claim_batch(run_id=run_b.pk, received_before=later(), batch_size=10) is None

    attempts = ImprovementAttempt.objects.filter(run=run_b)
    assert attempts.count() == 2
    assert {a.lease_until for a in attempts} == {second.lease_until}
    assert second.lease_until != first.lease_until
    held = Session.objects.filter(improvement_status="processing")
    assert {s.lease_until for s in held if s.user_id != "u1"} == {second.lease_until}


def test_a_claim_beside_a_batch_in_flight_leaves_a_session_given_back_after_a_crash_for_later(world):
    """Read-ahead claims (``fresh_only``) come back empty while such a session is next in line: a poison session
    that kills the process must not take a batch in flight with it."""
    shown = list(world["vectors"])[:2]
    click(register(user_id="crashed", shown=shown, query_vector=world["query"]), shown[0])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    services.release_claim(claim=services.claim_batch(run_id=run.pk, received_before=later()), reason="crash")
    click(register(user_id="fresh", shown=shown, query_vector=world["query"]), shown[0])
    assert services.claim_batch(run_id=run.pk, received_before=later(), fresh_only=True) is None
    claim = services.claim_batch(run_id=run.pk, received_before=later())
    assert claim.retried and sorted(claim.users.values()) == ["crashed", "fresh"]
    services.release_claim(claim=claim, reason="crash again")
    click(register(user_id="newer", shown=shown, query_vector=world["query"]), shown[0])
    Session.objects.filter(user_id__in=["crashed", "fresh"]).update(improvement_status="done")
    fresh = services.claim_batch(run_id=run.pk, received_before=later(), fresh_only=True)
    assert not fresh.retried and list(fresh.users.values()) == ["newer"]


def test_unsettled_sessions_are_not_claimed_and_anonymous_ones_are(world, settings):
    shown = list(world["vectors"])[:2]
    click(register(user_id="u", shown=shown, query_vector=world["query"]), shown[0])
    click(register(user_id=None, shown=shown, query_vector=world["query"]), shown[0])
    run = services.create_run(trigger=RunTrigger.COMMAND)
    assert services.claim_batch(run_id=run.pk, received_before=timezone.now() - timedelta(minutes=1)) is None
    claim = services.claim_batch(run_id=run.pk, received_before=later())
    assert sorted(claim.users.values(), key=str) == [None, "u"]  # anonymous: for the shared tier


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
                claim = services.claim_batch(run_id=run_id, received_before=later(), batch_size=3)
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

    assert services.claim_batch(run_id=run.pk, received_before=later(), lease_seconds=0)
    assert services.reap_expired_leases()["returned"] == 1
    session.refresh_from_db()
    assert (session.improvement_status, session.attempts, session.lease_until) == ("pending", 1, None)
    assert "lease expired" in session.improvement_detail

    assert services.claim_batch(run_id=run.pk, received_before=later(), lease_seconds=0)
    assert services.reap_expired_leases()["failed"] == 1
    session.refresh_from_db()
    assert (session.improvement_status, session.attempts) == ("failed", 2)
    assert list(ImprovementAttempt.objects.values_list("outcome", flat=True)) == ["expired", "expired"]


def test_partial_index_serves_the_claim(world):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM clickstream_session WHERE improvement_status = 'pending' "
            "AND received_at < now() ORDER BY received_at LIMIT 10"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "session_ready_idx" in plan


def _running(run, *, heartbeat_age: float):
    """Mark ``run`` running with a heartbeat ``heartbeat_age`` seconds old (as a worker that then went quiet)."""
    from improvement.models import ImprovementRun, RunStatus

    beat = timezone.now() - timedelta(seconds=heartbeat_age)
    ImprovementRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=beat, started_at=beat)


def test_a_silent_workers_claims_go_back_at_the_next_claim_without_waiting_for_the_lease(world, settings):
    from improvement.models import ImprovementRun, RunStatus

    settings.IMPROVEMENT_WORKER_GRACE_SECONDS = 60
    shown = list(world["vectors"])[:2]
    for user in ("alive", "dead"):
        click(register(user_id=user, shown=shown, query_vector=world["query"]), shown[0])
    alive_run, dead_run = (services.create_run(trigger=RunTrigger.COMMAND) for _ in range(2))
    held = {}
    for run, user in ((alive_run, "alive"), (dead_run, "dead")):
        held[user] = services.claim_batch(run_id=run.pk, received_before=later(), user_id=user, lease_seconds=300)
    _running(alive_run, heartbeat_age=59)  # within the grace period
    _running(dead_run, heartbeat_age=61)  # silent past it: killed, OOM, a lost machine

    successor = services.create_run(trigger=RunTrigger.COMMAND)
    claim = services.claim_batch(run_id=successor.pk, received_before=later())
    assert claim is not None and list(claim.users.values()) == ["dead"]  # the 300 s lease did not hold it
    assert Session.objects.get(user_id="alive").improvement_status == "processing"
    dead_attempt = ImprovementAttempt.objects.get(run=dead_run)
    assert dead_attempt.outcome == "expired" and "silent" in dead_attempt.detail

    assert services.reap_expired_leases()["runs_failed"] == 1
    assert ImprovementRun.objects.get(pk=dead_run.pk).status == RunStatus.FAILED
    assert ImprovementRun.objects.get(pk=alive_run.pk).status == RunStatus.RUNNING


def test_a_running_run_records_its_worker_and_beats(transactional_db, settings):
    from improvement.models import ImprovementRun
    from improvement.services.heartbeat import heartbeat, worker_identity

    settings.IMPROVEMENT_WORKER_GRACE_SECONDS = 6  # a beat every second
    run = services.create_run(trigger=RunTrigger.COMMAND)
    _running(run, heartbeat_age=100)
    before = ImprovementRun.objects.get(pk=run.pk).heartbeat_at
    with heartbeat(run_id=run.pk):
        import time

        time.sleep(1.5)
    assert ImprovementRun.objects.get(pk=run.pk).heartbeat_at > before + timedelta(seconds=90)
    finished = services.execute_run(run_id=services.create_run(trigger=RunTrigger.COMMAND).pk)
    assert finished.worker == worker_identity() and finished.heartbeat_at is not None

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

"""improvement.services.batch: one claimed batch — skip and failure reasons, isolated adjuster faults,
embedded query vectors, and the fence that stops a batch whose lease was lost or whose user was forgotten."""

from __future__ import annotations

import time

import numpy as np
import pytest

from clickstream.models import Session
from improvement import services
from improvement.learning import adjuster
from improvement.models import AttemptOutcome, ImprovementAttempt, RunTrigger
from improvement.services import runs
from studio.models import PersonalizedObject
from tests.improvement.support import click, later, ranking, register, run_improvement


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
    anonymous = register(user_id=None, shown=order[:3], query_vector=q)  # claimed: it may teach the shared tier
    click(anonymous, order[1])

    run = run_improvement()
    assert run.claimed == 6 and run.used == 0
    assert run.skipped == {"irrelevant": 1, "no_click": 2, "objects_gone": 1, "clicked_objects_gone": 1}
    statuses = dict(Session.objects.values_list("user_id", "improvement_status"))
    assert statuses == {**dict.fromkeys(("u", "u2", "u3", "u4", "u5"), "skipped"), None: "done"}
    assert Session.objects.get(pk=anonymous.pk).improvement_detail.startswith("taught the shared tier")
    assert "deleted" in Session.objects.get(pk=gone.pk).improvement_detail
    assert not PersonalizedObject.objects.exists()
    outcomes = sorted(ImprovementAttempt.objects.values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.DONE] + [AttemptOutcome.SKIPPED] * 5


def test_event_weights_admit_listed_types(world, settings):
    settings.IMPROVEMENT_EVENT_WEIGHTS = {"click": 1.0, "purchase": 3.0}
    order = ranking(world["query"], None)
    session = register(user_id="u", shown=order[:4], query_vector=world["query"])
    click(session, order[2], event_type="purchase")
    assert run_improvement().used == 1


def test_a_poison_session_fails_alone(world):
    order = ranking(world["query"], None)
    good = register(user_id="good", shown=order[:4], query_vector=world["query"])
    click(good, order[3])
    # Ingestion refuses both of these now; rows stored before it did must still fail alone in a batch.
    no_query = register(user_id="nq", shown=order[:4], query="q")
    Session.objects.filter(pk=no_query.pk).update(search_query="", query_vector=None)
    click(no_query, order[3])
    zero = register(user_id="zero", shown=order[:4], query_vector=world["query"])
    Session.objects.filter(pk=zero.pk).update(query_vector=np.zeros(len(world["query"])).tolist())
    click(zero, order[3])

    run = run_improvement()
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
    run = run_improvement()
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

    run = run_improvement(adjust=faulty)
    assert (run.claimed, run.used, run.failed) == (6, 5, 1)
    failed = Session.objects.get(improvement_status="failed")
    assert failed.user_id == "b" and "boom" in failed.improvement_detail
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"a", "b", "c"}


def test_missing_query_vectors_are_embedded_and_stored(world):
    order = ranking(world["query"], None)
    session = register(user_id="u", shown=order[:3], query="funny space movies")
    click(session, order[2])
    run = run_improvement()
    assert run.used == 1
    session.refresh_from_db()
    assert session.query_vector is not None
    assert abs(np.linalg.norm(np.asarray(session.query_vector)) - 1.0) < 1e-4


def test_a_batch_whose_lease_was_lost_writes_nothing_and_is_redone_once(world):
    order = ranking(world["query"], None)
    session = register(user_id="u", shown=order[:4], query_vector=world["query"])
    click(session, order[3])
    slow = services.create_run(trigger=RunTrigger.COMMAND)
    claim = services.claim_batch(run_id=slow.pk, received_before=later(), lease_seconds=1)
    time.sleep(1.2)  # the slow run stalls past its lease …
    rescuer = run_improvement()  # … the next run reaps and finishes the session
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
    claim = services.claim_batch(run_id=run.pk, received_before=later())
    counts = services.forget_user(user_id="leave")
    assert counts["sessions"] == 1 and counts["improvement_attempts"] == 1
    report = services.process_claim(claim=claim, params=services.adjuster_params())
    assert report.used == 1 and report.failed_reasons == {"session_deleted": 1}
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"stay"}


def test_a_first_result_click_teaches_through_skip_next_only_when_weighted(world, settings):
    settings.IMPROVEMENT_SHARED_WEIGHT = 0.0  # the user's own copies only
    order = ranking(world["query"], None)
    for weight in (0.0, 0.5):
        settings.IMPROVEMENT_PAIR_NEXT_WEIGHT = weight
        click(register(user_id="top", shown=order[:4], query_vector=world["query"]), order[0])
        run_improvement()
        if weight == 0.0:
            assert not PersonalizedObject.objects.exists()  # no pair: nothing was shown above the click
    copies = PersonalizedObject.objects.filter(user_id="top")
    assert [c.original.object_id for c in copies.select_related("original")] == [order[0]]  # the one below: untouched
    assert ranking(world["query"], "top") == order  # lifted, not reordered

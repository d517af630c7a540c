"""Faults with real processes: Celery workers killed at each stage of a batch, a poison session
that kills every worker touching it, overlapping beat ticks and a duplicated task delivery.

Fault injection lives here, not in the service: a worker started by ``fault_worker`` imports this
module (``celery worker --include``), and when ``STUDIO_FAULT_INJECT`` is set the module wraps one
step of the pipeline so that the worker process SIGKILLs itself at that point:

- ``after_claim``   — the claim transaction committed (sessions ``processing`` under a lease);
- ``after_compute`` — the adjuster returned its vectors, nothing written yet;
- ``during_write``  — the copies were written inside the batch's write transaction, not committed;
- ``poison``        — a batch holding a session whose ``search_query`` is ``POISON_QUERY`` (every time);
- ``stall``         — not a death: after claiming, the worker sleeps (once), for the test to kill it.

``stage:/path/marker`` fires once: the marker file records that it fired. Nothing is mocked: the
worker, broker and database are the real ones, and the process dies as a machine loss would.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from django.db import transaction

from tests import support
from tests.support import ROOT, WORKER_ENV, subprocess_env

FAULT_ENV = "STUDIO_FAULT_INJECT"
POISON_QUERY = "poison: kills every worker that claims it"
STAGES = ("after_claim", "after_compute", "during_write")


# --- the hook (runs inside worker processes) ------------------------------------------------------


def _die_once(stage: str, marker: str) -> None:
    if marker:
        if os.path.exists(marker):
            return
        Path(marker).write_text(stage)
    os.kill(os.getpid(), signal.SIGKILL)


def install_fault(spec: str) -> None:
    """Wrap the pipeline step named by ``spec`` (see the module docstring) to SIGKILL this process."""
    from clickstream.models import Session
    from improvement.learning import batch
    from improvement.services import reader, runs
    from studio.catalogue import personalization

    stage, _, marker = spec.partition(":")
    if stage == "after_claim":
        claim_batch = runs.claim_batch

        def claiming_then_dying(**kwargs):
            claim = claim_batch(**kwargs)
            if claim is not None:
                _die_once(stage, marker)
            return claim

        runs.claim_batch = claiming_then_dying
    elif stage == "after_compute":
        adjust = batch.adjust_isolating_failures

        def computing_then_dying(**kwargs):
            result = adjust(**kwargs)
            _die_once(stage, marker)
            return result

        batch.adjust_isolating_failures = computing_then_dying
    elif stage == "during_write":
        write_copies = personalization.write_copies

        def writing_then_dying(**kwargs):
            report = write_copies(**kwargs)  # rows are in the open write transaction
            _die_once(stage, marker)
            return report

        personalization.write_copies = writing_then_dying
    elif stage == "stall":  # claims, then sleeps (the test kills the worker meanwhile)
        claim_batch = runs.claim_batch

        def claiming_then_stalling(**kwargs):
            claim = claim_batch(**kwargs)
            if claim is not None and not os.path.exists(marker):
                Path(marker).write_text(stage)
                time.sleep(600)
            return claim

        runs.claim_batch = claiming_then_stalling
    elif stage == "poison":
        load_claim = reader.load_claim

        def dying_on_poison(*, claim, **kwargs):
            if Session.objects.filter(pk__in=claim.session_pks, search_query=POISON_QUERY).exists():
                os.kill(os.getpid(), signal.SIGKILL)
            return load_claim(claim=claim, **kwargs)

        reader.load_claim = dying_on_poison
    else:
        raise ValueError(f"{FAULT_ENV}: unknown stage {stage!r}")


if os.environ.get(FAULT_ENV):
    install_fault(os.environ[FAULT_ENV])


# --- test support -----------------------------------------------------------------------------------

SHORT_LEASE = "10"  # above a cold worker's first batch (torch import), below the survivor's start-up


def wait_for(predicate, *, timeout: float = 180, what: str = "condition"):
    """``tests.support.wait_for`` with a longer default: here workers die and others take over."""
    return support.wait_for(predicate, timeout=timeout, what=what)


class FaultWorker:
    """A Celery worker subprocess that imports this module (so ``STUDIO_FAULT_INJECT`` applies)."""

    def __init__(self, queue: str, log: Path, *, pool: str = "solo", **env: str):
        self.queue, self.log, self.pool = queue, log, pool
        self.env = subprocess_env(CELERY_TASK_DEFAULT_QUEUE=queue, **WORKER_ENV, **env)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> FaultWorker:
        pool = ["--pool", "solo"] if self.pool == "solo" else ["--pool", "prefork", "--concurrency", "1"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "studio", "worker", *pool, "--loglevel", "INFO"]
            + ["-Q", self.queue, "-n", f"{self.queue}-{self.log.stem}@%h", "--without-mingle", "--without-gossip"]
            + ["--include", "tests.system.test_reliability_faults"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._ready, timeout=timeout, what=f"worker ready ({self.log})")
        return self

    def _ready(self) -> bool:
        text = self.log.read_text(errors="replace")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{text[-3000:]}")
        return "ready." in text

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


@pytest.fixture
def fault_worker(celery_queue, tmp_path):
    """``fault_worker(**env)`` starts a worker on this test's queue; all are stopped at teardown."""
    workers: list[FaultWorker] = []

    def factory(*, pool: str = "solo", **env: str) -> FaultWorker:
        worker = FaultWorker(celery_queue, tmp_path / f"worker{len(workers)}.log", pool=pool, **env)
        workers.append(worker)
        return worker.start()

    yield factory
    for worker in workers:
        worker.stop()


def enqueue_api_run() -> int:
    """Queue a run as ``POST /improvement/runs`` does (sent to the broker on commit)."""
    from improvement import services
    from improvement.models import RunTrigger

    with transaction.atomic():
        return services.enqueue_run(trigger=RunTrigger.API).pk


def run_finished(run_id: int) -> bool:
    from improvement.models import ImprovementRun, RunStatus

    return ImprovementRun.objects.get(pk=run_id).status in (RunStatus.SUCCEEDED, RunStatus.FAILED)


def copies_by_key() -> dict[tuple[str, str], np.ndarray]:
    """Every personalized copy's vectors, by (user, original object id)."""
    from studio.models import PersonalizedPart

    found: dict[tuple[str, str], list] = {}
    rows = PersonalizedPart.objects.order_by("personalized_id", "index").values_list(
        "personalized__user_id", "personalized__original__object_id", "vector"
    )
    for user_id, object_id, vector in rows:
        found.setdefault((user_id, object_id), []).append(np.asarray(vector, dtype=np.float32))
    return {key: np.stack(parts) for key, parts in found.items()}


def reset_improvement_state() -> None:
    """Forget every run, attempt and copy, and put every session back in the queue as new."""
    from clickstream.models import Session
    from improvement.models import ImprovementAttempt, ImprovementRun
    from studio.models import PersonalizedObject

    PersonalizedObject.objects.all().delete()
    ImprovementAttempt.objects.all().delete()
    ImprovementRun.objects.all().delete()
    Session.objects.update(
        improvement_status="pending", improvement_detail="", attempts=0, lease_until=None, improved_at=None
    )


@pytest.fixture
def clicked_sessions(transactional_db, settings):
    """Eight objects, four users with two clicked sessions each (settled at once)."""
    from tests.improvement.support import click, load_catalogue, near, ranking, register, unit

    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    settings.STUDIO_EMBEDDER = "none"
    rng = np.random.default_rng(11)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(8)})
    order = ranking(query, None)
    for n, user in enumerate(("ann", "bob", "cem", "dee")):
        for k in range(2):
            session = register(user_id=user, shown=order[:6], query_vector=near(rng, query, 0.1))
            click(session, order[2 + (n + k) % 4])
    return order


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_worker_killed_at_any_stage_loses_nothing_and_repeats_nothing(
    stage, clicked_sessions, fault_worker, tmp_path
):
    """SIGKILL after claiming, after computing and while writing: once the lease expires the next run
    finishes every session exactly once, and the vectors are those of a run that never crashed."""
    from clickstream.models import Session
    from improvement import services
    from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus, RunTrigger
    from studio.models import PersonalizedObject

    # The reference: the same sessions through a run that does not crash (in this process).
    reference_run = services.execute_run(run_id=services.create_run(trigger=RunTrigger.COMMAND).pk)
    assert reference_run.used == 8
    expected = copies_by_key()
    assert len(expected) >= 4
    reset_improvement_state()

    marker = tmp_path / "fired"
    doomed = fault_worker(**{FAULT_ENV: f"{stage}:{marker}", "IMPROVEMENT_LEASE_SECONDS": SHORT_LEASE})
    killed_run = enqueue_api_run()
    wait_for(lambda: not doomed.alive(), what=f"the worker to die {stage}")
    assert marker.read_text() == stage
    # Nothing the dead worker did is visible: its sessions wait under its lease, no copy was committed.
    assert Session.objects.filter(improvement_status="processing").count() == 8
    assert not PersonalizedObject.objects.exists()

    survivor = fault_worker()  # no fault; started while the short lease runs out
    lease_end = Session.objects.order_by("-lease_until").values_list("lease_until", flat=True)[0]
    wait_for(lambda: _past(lease_end), what="the lease to run out")
    next_run = enqueue_api_run()
    wait_for(lambda: run_finished(next_run), what="the next run")
    assert survivor.alive()

    assert ImprovementRun.objects.get(pk=next_run).used == 8
    assert ImprovementRun.objects.get(pk=killed_run).status == RunStatus.RUNNING  # never acknowledged
    for session in Session.objects.all():
        assert (session.improvement_status, session.attempts) == ("done", 1), (
            session.improvement_detail,
            list(ImprovementAttempt.objects.filter(session=session).values()),
        )
        outcomes = list(
            ImprovementAttempt.objects.filter(session=session).order_by("claimed_at").values_list("run_id", "outcome")
        )
        assert outcomes == [(killed_run, AttemptOutcome.EXPIRED), (next_run, AttemptOutcome.DONE)]
    assert set(PersonalizedObject.objects.values_list("updates", flat=True)) == {1}  # written once
    actual = copies_by_key()
    assert actual.keys() == expected.keys()
    for key, vectors in expected.items():
        np.testing.assert_allclose(actual[key], vectors, atol=1e-6, err_msg=str(key))


def _past(moment) -> bool:
    from django.utils import timezone

    return timezone.now() > moment


@pytest.mark.slow
def test_a_poison_session_that_kills_its_worker_fails_alone_after_max_attempts(
    clicked_sessions, fault_worker, settings
):
    """A session whose batch kills the worker process every time (prefork: the pool replaces the
    child and the task is redelivered) ends ``failed`` after ``IMPROVEMENT_MAX_ATTEMPTS``; the
    sessions claimed beside it are learned, and the worker keeps serving."""
    from clickstream.models import Session
    from improvement.models import ImprovementRun, RunStatus
    from studio.models import PersonalizedObject
    from tests.improvement.support import click, register

    order = clicked_sessions
    poison = register(
        user_id="eve",
        shown=order[:6],
        query_vector=np.ones(settings.STUDIO_EMBEDDING_DIM),
        query=POISON_QUERY,
    )
    click(poison, order[1])
    worker = fault_worker(pool="prefork", **{FAULT_ENV: "poison"})
    run_id = enqueue_api_run()
    wait_for(lambda: run_finished(run_id), what="the run to end")
    assert worker.alive()

    poison.refresh_from_db()
    assert (poison.improvement_status, poison.attempts) == ("failed", settings.IMPROVEMENT_MAX_ATTEMPTS)
    others = Session.objects.exclude(pk=poison.pk)
    assert list(others.values_list("improvement_status", flat=True).distinct()) == ["done"]
    assert set(PersonalizedObject.objects.values_list("user_id", flat=True)) == {"ann", "bob", "cem", "dee"}
    assert ImprovementRun.objects.get(pk=run_id).status == RunStatus.SUCCEEDED


@pytest.mark.slow
def test_overlapping_beat_ticks_and_a_duplicated_delivery_process_each_session_once(
    transactional_db, settings, fault_worker
):
    """Two workers, two beat ticks at once and one tick delivered twice (as a broker redelivery
    would): every session is learned by exactly one attempt of one run."""
    from clickstream.models import Session
    from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus
    from improvement.tasks import improve
    from tests.improvement.support import click, load_catalogue, near, ranking, register, unit

    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    rng = np.random.default_rng(5)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(6)})
    order = ranking(query, None)
    for user in range(20):
        for _ in range(2):
            click(register(user_id=f"u{user}", shown=order[:5], query_vector=near(rng, query, 0.1)), order[3])

    env = {"IMPROVEMENT_BATCH_SIZE": "4"}
    fault_worker(**env)
    fault_worker(**env)
    improve.apply_async()  # tick 1
    improve.apply_async()  # tick 2
    improve.apply_async(task_id="tick-3")
    improve.apply_async(task_id="tick-3")  # the same tick, delivered again

    def settled() -> bool:
        busy = ImprovementRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists()
        return not busy and not Session.objects.exclude(improvement_status="done").exists()

    wait_for(settled, what="every session to be learned")
    time.sleep(1.0)  # any late delivery would start a run now: give it the chance to misbehave
    wait_for(settled, what="late runs to finish")

    attempts = list(ImprovementAttempt.objects.values_list("session_id", "outcome"))
    assert len(attempts) == 40
    assert len({session for session, _ in attempts}) == 40
    assert {outcome for _, outcome in attempts} == {AttemptOutcome.DONE}
    runs = ImprovementRun.objects.all()
    assert sum(run.used for run in runs) == 40
    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}
    assert set(Session.objects.values_list("attempts", flat=True)) == {0}


def _celery_main_pid(shell_pid: int) -> int:
    """The Celery main process a supervisor's ``sh -c`` started: the shell itself if it exec'd, else its child."""

    def cmdline(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")

    if "celery" in cmdline(shell_pid):
        return shell_pid
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == shell_pid and "celery" in cmdline(int(stat.parent.name)):
                return int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no celery process under {shell_pid}")


def _fresh_heartbeat_since(moment: float) -> bool:
    from django.core.cache import cache

    from studio.config import heartbeat

    return any(ts > moment for ts in (cache.get(heartbeat._CACHE_KEY) or {}).values())


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_restarted_and_every_session_is_learned_once(
    clicked_sessions, celery_queue, tmp_path, settings
):
    """``kill -9`` of the Celery worker's main process (prefork, as ``make run`` runs it) while its run
    holds every session: the supervisor stops what is left of it and restarts it (a fresh heartbeat
    well within 60 s). Then either its task comes back (acks_late) and the run goes on, first giving
    back what its dead try held, or, once the dead run's heartbeat is older than
    ``IMPROVEMENT_WORKER_GRACE_SECONDS``, the next run takes its sessions without waiting for the
    300 s lease. Either way every session is learned exactly once and no copy is written twice."""
    from clickstream.models import Session
    from improvement import services
    from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus
    from studio.devstack.supervisor import Program, Supervisor
    from studio.models import PersonalizedObject

    grace = 3
    settings.IMPROVEMENT_WORKER_GRACE_SECONDS = grace
    marker, log = tmp_path / "stalled", tmp_path / "supervised.log"
    env = subprocess_env(
        CELERY_TASK_DEFAULT_QUEUE=celery_queue,
        **WORKER_ENV,
        IMPROVEMENT_WORKER_GRACE_SECONDS=str(grace),
        **{FAULT_ENV: f"stall:{marker}"},
    )
    command = [sys.executable, "-m", "celery", "-A", "studio", "worker", "--pool", "prefork", "--concurrency", "1"]
    command += ["--loglevel", "INFO", "-Q", celery_queue, "-n", f"{celery_queue}@%h", "--without-mingle"]
    command += ["--without-gossip", "--include", "tests.system.test_reliability_faults"]
    worker = Program(name="worker", command=shlex.join(command))
    with log.open("w") as out:
        supervisor = Supervisor([worker], env=env, cwd=ROOT, out=out)
        threading.Thread(target=supervisor.run, kwargs={"poll_seconds": 0.2}, daemon=True).start()
        try:
            wait_for(lambda: "ready." in log.read_text(errors="replace"), what="the supervised worker")
            killed_run = enqueue_api_run()
            wait_for(marker.exists, what="the worker to claim and stall")
            assert Session.objects.filter(improvement_status="processing").count() == 8
            killed_at = time.time()
            os.kill(_celery_main_pid(worker.process.pid), signal.SIGKILL)

            wait_for(lambda: worker.restarts == 1, timeout=30, what="the supervisor to restart the worker")
            wait_for(lambda: _fresh_heartbeat_since(killed_at), timeout=60, what="a heartbeat of the new worker")
            assert time.time() - killed_at < 60

            time.sleep(grace + 1)  # the dead try's last heartbeat is now older than the grace period
            next_run = enqueue_api_run()
            wait_for(lambda: run_finished(next_run), what="the next run")
            wait_for(lambda: not Session.objects.exclude(improvement_status="done").exists(), what="every session")
        finally:
            supervisor.stop()

    services.reap_expired_leases()  # what beat does when idle: fails runs that are lost
    assert ImprovementRun.objects.get(pk=killed_run).status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
    for session in Session.objects.all():
        outcomes = list(ImprovementAttempt.objects.filter(session=session).values_list("outcome", flat=True))
        assert outcomes.count(AttemptOutcome.DONE) == 1 and AttemptOutcome.PROCESSING not in outcomes, outcomes
    assert set(PersonalizedObject.objects.values_list("updates", flat=True)) == {1}  # written once
    assert not any(p.process and p.process.poll() is None for p in supervisor.programs)

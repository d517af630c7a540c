"""Improvement runs: create and queue them, run one to its end batch by batch, close them.

A run loops over batches until no ready session is left or its time budget is spent: claim
(``claims``), process (``batch``), add to the run (``metrics``). See docs/architecture.md,
"An improvement run".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from improvement import selectors
from improvement.learning.params import AdjusterParams
from improvement.models import ImprovementRun, RunStatus, RunTrigger
from improvement.services.batch import AdjustFn, LoadedBatch, finish_claim, gc_paused
from improvement.services.claims import LeaseLost, claim_batch, fail_lost_runs, release_run_claims
from improvement.services.heartbeat import heartbeat, worker_identity
from improvement.services.metrics import BatchReport, count_on_run
from improvement.services.reader import BatchReader, release_quietly, stopped_by
from studio.catalogue import personalization
from studio.core.errors import DomainError

logger = logging.getLogger(__name__)

# Errors worth retrying later: the database or the broker went away.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)

# Fraction of IMPROVEMENT_TIME_LIMIT_SECONDS after which a run stops claiming new batches, so that
# it ends by itself before Celery's soft limit interrupts it.
TIME_BUDGET_FRACTION = 0.8


def adjuster_params(**overrides) -> AdjusterParams:
    """The adjuster's parameters from settings (``IMPROVEMENT_*``, ``STUDIO_METRIC``)."""
    return AdjusterParams.from_settings(**overrides)


def run_parameters(params: AdjusterParams) -> dict:
    """Everything that shapes a run, as recorded on it."""
    return {
        **dataclasses.asdict(params),
        "negatives": settings.IMPROVEMENT_NEGATIVES,
        "event_weights": dict(settings.IMPROVEMENT_EVENT_WEIGHTS),
        "batch_size": settings.IMPROVEMENT_BATCH_SIZE,
        "settle_seconds": settings.IMPROVEMENT_SETTLE_SECONDS,
        "lease_seconds": settings.IMPROVEMENT_LEASE_SECONDS,
        "max_attempts": settings.IMPROVEMENT_MAX_ATTEMPTS,
    }


def create_run(*, trigger: str, task_id: str = "", scope: dict | None = None) -> ImprovementRun:
    """A queued run (not started); ``scope`` records how it is narrowed (see ``RunScope``)."""
    return ImprovementRun.objects.create(
        trigger=trigger, task_id=task_id, status=RunStatus.QUEUED, parameters=dict(scope or {})
    )


@dataclasses.dataclass(frozen=True)
class RunScope:
    """What narrows a run (the demo page's "Improve now"): one user, no settle time, a bound on sessions."""

    user_id: str | None = None
    settle_seconds: int | None = None
    session_limit: int | None = None

    def as_dict(self) -> dict:
        """The fields that are set, as recorded on the run and sent with its task."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


def enqueue_run(*, trigger: str, scope: RunScope | None = None) -> ImprovementRun:
    """Create a queued run and send it to a Celery worker once this transaction commits."""
    from improvement.tasks import improve

    narrowed = (scope or RunScope()).as_dict()
    run = create_run(trigger=trigger, scope=narrowed)
    transaction.on_commit(lambda: improve.delay(run_id=run.pk, **narrowed))
    return run


class BrokerUnavailable(DomainError):
    """The broker refused a run's task: the run is recorded failed, not left queued forever (HTTP 503)."""

    code = "broker_unavailable"
    status_code = 503

    def __init__(self, detail: str):
        super().__init__("The task broker is unavailable; retry later.")
        self.detail = detail  # the broker's own words: for the admin and the log, not for API clients


def queue_run(*, trigger: str, scope: RunScope | None = None) -> ImprovementRun:
    """Create a run and hand it to a Celery worker now (call outside a transaction: the task is sent
    on commit). Raises BrokerUnavailable, with the run marked failed, when the broker refuses it."""
    from kombu.exceptions import OperationalError as BrokerOperationalError

    run = None
    try:
        with transaction.atomic():
            run = enqueue_run(trigger=trigger, scope=scope)
    except (BrokerOperationalError, ConnectionError) as exc:
        if run is None:
            raise
        # The run committed, but its task was never queued: no worker would ever start it.
        finish_run(run_id=run.pk, status=RunStatus.FAILED, error=f"could not be queued: {exc}")
        raise BrokerUnavailable(str(exc)) from exc
    return run


def run_for_beat(*, task_id: str) -> ImprovementRun | None:
    """The run of a beat-started task: the one this task created before (a retry), else a new one,
    or None when there is nothing to do (no ready session, no expired lease), so an idle service
    does not fill the runs list with empty runs every interval."""
    existing = selectors.run_for_task(task_id=task_id)
    if existing is not None:
        return existing
    received_before = timezone.now() - timedelta(seconds=settings.IMPROVEMENT_SETTLE_SECONDS)
    if not selectors.ready_session_exists(received_before=received_before) and not selectors.expired_lease_exists():
        return None
    return create_run(trigger=RunTrigger.BEAT, task_id=task_id)


def _begin_or_fail(run_id: int, params: AdjusterParams, scope: dict) -> bool:
    """``_begin_run``; a run that cannot even start (not a passing outage) is marked failed, never left queued."""
    try:
        return _begin_run(run_id, params, scope)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        finish_run(run_id=run_id, status=RunStatus.FAILED, error=f"could not start: {type(exc).__name__}: {exc}")
        raise


def _begin_run(run_id: int, params: AdjusterParams, scope: dict | None = None) -> bool:
    """Mark a run running (first try or a retry); False if it already finished. ``scope`` records
    what a narrowed run overrode (settle time, user) beside its parameters."""
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return False
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.parameters = {**run_parameters(params), **(scope or {})}
        run.worker = worker_identity()  # the holder of the claims this run makes
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["status", "started_at", "parameters", "worker", "heartbeat_at"])
    return True


def finish_run(*, run_id: int, status: str, error: str = "") -> ImprovementRun:
    """Close a run: status, finish time, duration, sessions per second, error text."""
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        now = timezone.now()
        run.status = status
        run.finished_at = now
        run.error = error[:10_000]
        if run.started_at:
            run.duration_seconds = max((now - run.started_at).total_seconds(), 1e-6)
            run.sessions_per_second = run.claimed / run.duration_seconds
        run.save(update_fields=["status", "finished_at", "error", "duration_seconds", "sessions_per_second"])
    return run


def execute_run(
    *,
    run_id: int,
    progress: Callable[[BatchReport], None] | None = None,
    adjust: AdjustFn | None = None,
    settle_seconds: int | None = None,
    user_id: str | None = None,
    session_limit: int | None = None,
) -> ImprovementRun:
    """Run an improvement run to its end, in this process (the task, ``manage.py improve`` and the
    evaluation call it). Idempotent: a finished run is returned as it is; a retried one first gives
    back what its earlier try still held, and never repeats a committed batch.

    ``settle_seconds`` (default ``IMPROVEMENT_SETTLE_SECONDS``), ``user_id`` (default: every user) and
    ``session_limit`` (default: none) narrow a run; the demo page's "Improve now" uses all three (0 s, its
    user, ``STUDIO_DEMO_IMPROVE_MAX_SESSIONS``), recorded on the run. While it runs, the run's row gets a
    heartbeat (``heartbeat``): a run whose process dies has its claims released after the grace period.

    Transient errors (database or broker gone) propagate with the run left ``running`` so that the
    caller may retry; any other error fails the run and propagates.
    """
    params = adjuster_params()
    settle = settings.IMPROVEMENT_SETTLE_SECONDS if settle_seconds is None else settle_seconds
    narrowed = RunScope(user_id=user_id, settle_seconds=settle, session_limit=session_limit).as_dict()
    if not _begin_or_fail(run_id, params, narrowed):
        return ImprovementRun.objects.get(pk=run_id)
    release_run_claims(run_id=run_id, reason="its run was restarted before finishing it; back in the queue")
    fail_lost_runs()  # runs whose worker died: their claims go back at this run's first claim
    scope = _Scope(
        run_id=run_id,
        params=params,
        adjust=adjust,
        user_id=user_id,
        received_before=timezone.now() - timedelta(seconds=settle),
        session_limit=session_limit,
    )
    try:
        with heartbeat(run_id=run_id):
            note = _run_batches(scope, progress)
    except TRANSIENT_ERRORS:
        raise
    except SoftTimeLimitExceeded:
        return finish_run(run_id=run_id, status=RunStatus.SUCCEEDED, error="stopped at the soft time limit")
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        finish_run(run_id=run_id, status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    personalization.delete_decayed_copies(half_life_days=settings.IMPROVEMENT_HALF_LIFE_DAYS)
    return finish_run(run_id=run_id, status=RunStatus.SUCCEEDED, error=note)


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What every batch of one run shares."""

    run_id: int
    params: AdjusterParams
    adjust: AdjustFn | None
    user_id: str | None
    received_before: datetime  # sessions received before it are settled
    session_limit: int | None = None  # claim at most this many sessions in all


def _run_batches(scope: _Scope, progress: Callable[[BatchReport], None] | None) -> str:
    """Claim and process batches until none is ready (returns "") or the time budget or the session limit is
    spent (a note). The next batch is claimed and read while the current one adjusts and writes (``reader``)."""
    started = time.perf_counter()
    budget = settings.IMPROVEMENT_TIME_LIMIT_SECONDS * TIME_BUDGET_FRACTION
    reader = BatchReader(
        claim=lambda size, fresh_only: claim_batch(
            run_id=scope.run_id,
            received_before=scope.received_before,
            user_id=scope.user_id,
            batch_size=size,
            fresh_only=fresh_only,
        ),
        params=scope.params,
        batch_size=settings.IMPROVEMENT_BATCH_SIZE,
        session_limit=scope.session_limit,
        # A second thread has its own connection: it cannot see what an enclosing transaction has not committed.
        read_ahead=settings.IMPROVEMENT_READ_AHEAD and not connection.in_atomic_block,
    )
    try:
        while (work := reader.next_batch()) is not None:
            within_budget = time.perf_counter() - started <= budget
            if within_budget:
                reader.read_ahead(current=work)
            report = _finish_or_release(scope, work)
            if report is not None and progress is not None:
                progress(report)
            if not within_budget:
                return "stopped claiming at the time budget; the rest waits for the next run"
    finally:
        reader.close()
    if reader.limit_reached:
        return f"stopped at its limit of {scope.session_limit} sessions; the rest waits for the next run"
    return ""


def _finish_or_release(scope: _Scope, work: LoadedBatch) -> BatchReport | None:
    """Adjust and write one loaded batch; None when its lease was lost (nothing written); gives it back on any error."""
    claim = work.claim
    try:
        with gc_paused():
            return finish_claim(work=work, adjust=scope.adjust)
    except LeaseLost as exc:
        logger.warning("run %s: batch of %d sessions dropped: %s", scope.run_id, len(claim.session_pks), exc)
        count_on_run(run_id=scope.run_id, name="lease_lost_batches")
        return None
    except BaseException as exc:
        release_quietly(claim, reason=stopped_by(exc))
        raise

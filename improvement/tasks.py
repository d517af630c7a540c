"""Celery tasks of the improvement loop (thin: they take ids and call one service)."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import close_old_connections
from kombu.exceptions import OperationalError as BrokerOperationalError

from improvement import selectors, services
from improvement.models import RunStatus

logger = logging.getLogger(__name__)

# Database or broker unavailable: retried with exponential backoff; anything else fails the run.
RETRY_FOR = (*services.TRANSIENT_ERRORS, BrokerOperationalError, ConnectionError)


class ImproveTask(Task):
    """Marks the run failed when the task gives up (retries exhausted, or a non-transient error)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        run_id = kwargs.get("run_id")
        try:
            close_old_connections()
            run = selectors.get_run(run_id=run_id) if run_id else selectors.run_for_task(task_id=task_id)
            if run is not None and run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                services.finish_run(run_id=run.pk, status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001  the database may be the reason the task failed
            logger.warning("could not mark the run of task %s failed", task_id, exc_info=True)


@shared_task(
    bind=True,
    base=ImproveTask,
    name="improvement.improve",
    autoretry_for=RETRY_FOR,
    max_retries=settings.IMPROVEMENT_MAX_RETRIES,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    soft_time_limit=settings.IMPROVEMENT_TIME_LIMIT_SECONDS,
    time_limit=settings.IMPROVEMENT_TIME_LIMIT_SECONDS + 60,
)
def improve(
    self,
    run_id: int | None = None,
    user_id: str | None = None,
    settle_seconds: int | None = None,
    session_limit: int | None = None,
) -> int | None:
    """Run an improvement run: ``run_id`` from the API, admin, command or demo; None from beat (the run is
    created here, once per task, so a retry continues it). ``user_id``, ``settle_seconds`` and
    ``session_limit`` narrow it (the demo's "Improve now"). Returns the run id (None: nothing to do)."""
    if run_id is None:
        run = services.run_for_beat(task_id=self.request.id or "")
        if run is None:
            services.reap_expired_leases()
            return None
        run_id = run.pk
    close_old_connections()  # a retry after the database went away starts on a fresh connection
    if selectors.get_run(run_id=run_id) is None:
        logger.warning("improvement run %s does not exist (deleted?); nothing to do", run_id)
        return None
    services.execute_run(run_id=run_id, user_id=user_id, settle_seconds=settle_seconds, session_limit=session_limit)
    return run_id


@shared_task(name="improvement.check_interleaving_guard", ignore_result=True)
def check_interleaving_guard() -> bool:
    """Beat: switch learned ranking off when it loses the interleaving experiment (STUDIO_INTERLEAVE_AUTO_OFF)."""
    return services.enforce_interleaving_guard()

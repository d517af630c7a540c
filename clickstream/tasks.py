"""Celery tasks of the clickstream (thin: they call one service)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from clickstream import services

RETENTION_TASK_NAME = "clickstream.purge_expired_sessions"
RETENTION_PERIODIC_TASK_NAME = "studio: clickstream retention"


@shared_task(name=RETENTION_TASK_NAME, ignore_result=True)
def purge_expired_sessions() -> dict[str, int]:
    """Delete sessions older than ``CLICKSTREAM_RETENTION_DAYS`` with their results and events, in
    bounded batches (idempotent: a repeated or overlapping run finds less or nothing to delete)."""
    return services.purge_expired_sessions(retention_days=settings.CLICKSTREAM_RETENTION_DAYS)

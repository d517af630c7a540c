"""The beat schedule of improvement runs: a django-celery-beat ``PeriodicTask``, editable in admin."""

from __future__ import annotations

from django.conf import settings

from studio.core.schedule import ensure_periodic_task

PERIODIC_TASK_NAME = "studio: improve"
TASK_NAME = "improvement.improve"


def ensure_beat_schedule(*, apps=None) -> bool:
    """Create the periodic improvement task every ``IMPROVEMENT_INTERVAL_SECONDS`` unless it exists.

    An existing task (perhaps edited by an admin: another interval, disabled) is left as it is.
    ``apps`` is a migration's app registry (historical models); None uses the real models.
    Returns whether the task was created.
    """
    return ensure_periodic_task(
        name=PERIODIC_TASK_NAME,
        task=TASK_NAME,
        every_seconds=settings.IMPROVEMENT_INTERVAL_SECONDS,
        description="Learn from settled click sessions: claim, adjust per-user vectors, write them.",
        apps=apps,
    )

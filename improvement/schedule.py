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


GUARD_TASK_NAME = "studio: interleaving guard"
GUARD_EVERY_SECONDS = 300


def ensure_guard_schedule(*, apps=None) -> bool:
    """Create the periodic interleaving guard check (every five minutes) unless it exists."""
    return ensure_periodic_task(
        name=GUARD_TASK_NAME,
        task="improvement.check_interleaving_guard",
        every_seconds=GUARD_EVERY_SECONDS,
        description="Switch learned ranking off when it loses the interleaving experiment (auto-off setting).",
        apps=apps,
    )

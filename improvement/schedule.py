"""The beat schedule of improvement runs: a django-celery-beat ``PeriodicTask``, editable in admin."""

from __future__ import annotations

import json

from django.conf import settings
from django.utils import timezone

PERIODIC_TASK_NAME = "studio: improve"
TASK_NAME = "improvement.improve"


def ensure_beat_schedule(*, apps=None) -> bool:
    """Create the periodic improvement task every ``IMPROVEMENT_INTERVAL_SECONDS`` unless it exists.

    An existing task (perhaps edited by an admin: another interval, disabled) is left as it is.
    ``apps`` is a migration's app registry (historical models); None uses the real models.
    Returns whether the task was created.
    """
    if apps is None:
        from django.apps import apps as registry

        apps = registry
    periodic_task = apps.get_model("django_celery_beat", "PeriodicTask")
    interval_schedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    periodic_tasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    if periodic_task.objects.filter(name=PERIODIC_TASK_NAME).exists():
        return False
    interval, _ = interval_schedule.objects.get_or_create(
        every=max(1, int(settings.IMPROVEMENT_INTERVAL_SECONDS)), period="seconds"
    )
    periodic_task.objects.create(
        name=PERIODIC_TASK_NAME,
        task=TASK_NAME,
        interval=interval,
        args="[]",
        kwargs=json.dumps({}),
        enabled=True,
        description="Learn from settled click sessions: claim, adjust per-user vectors, write them.",
    )
    # Beat re-reads its schedule when this marker moves (signals do it for admin edits, not for migrations).
    periodic_tasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
    return True

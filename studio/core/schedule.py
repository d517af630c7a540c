"""Periodic tasks (django-celery-beat rows, editable in the admin), created one way.

``ensure_periodic_task`` creates a task on an interval unless one of that name exists, so an
admin's edit (another interval, disabled) is never overwritten; migrations pass their historical
``apps``. (``clickstream/migrations/0003`` predates this helper and, shipped, keeps its inline
copy of the same steps.)
"""

from __future__ import annotations

import json

from django.utils import timezone


def ensure_periodic_task(*, name: str, task: str, every_seconds: int, description: str, apps=None) -> bool:
    """Create the periodic task ``name`` running ``task`` every ``every_seconds`` unless it exists;
    returns whether it was created. ``apps`` is a migration's app registry (None: the real models)."""
    if apps is None:
        from django.apps import apps as registry

        apps = registry
    periodic_task = apps.get_model("django_celery_beat", "PeriodicTask")
    if periodic_task.objects.filter(name=name).exists():
        return False
    interval_schedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    interval, _ = interval_schedule.objects.get_or_create(every=max(1, int(every_seconds)), period="seconds")
    periodic_task.objects.create(
        name=name, task=task, interval=interval, args="[]", kwargs=json.dumps({}), enabled=True, description=description
    )
    # Beat re-reads its schedule when this marker moves (signals do it for admin edits, not for migrations).
    periodic_tasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    periodic_tasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
    return True

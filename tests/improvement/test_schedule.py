"""improvement.schedule: the beat schedule is created by a migration and never overwritten."""

from __future__ import annotations

from django_celery_beat.models import IntervalSchedule, PeriodicTask

from improvement.schedule import PERIODIC_TASK_NAME, TASK_NAME, ensure_beat_schedule


def test_beat_schedule_is_created_by_migration_and_never_overwritten(db, settings):
    task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
    assert task.task == TASK_NAME and task.enabled
    assert (task.interval.every, task.interval.period) == (settings.IMPROVEMENT_INTERVAL_SECONDS, "seconds")
    # An admin's edit survives: ensuring the schedule again changes nothing.
    task.interval = IntervalSchedule.objects.create(every=600, period="seconds")
    task.enabled = False
    task.save()
    assert ensure_beat_schedule() is False
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (600, False)
    task.delete()
    assert ensure_beat_schedule() is True
    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).interval.every == settings.IMPROVEMENT_INTERVAL_SECONDS

"""Create the hourly periodic "studio: clickstream retention" task; never overwrite an admin's edit."""

from django.db import migrations

NAME = "studio: clickstream retention"
TASK = "clickstream.purge_expired_sessions"


def create_schedule(apps, schema_editor):
    periodic_task = apps.get_model("django_celery_beat", "PeriodicTask")
    interval_schedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    periodic_tasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    if periodic_task.objects.filter(name=NAME).exists():
        return
    interval, _ = interval_schedule.objects.get_or_create(every=3600, period="seconds")
    periodic_task.objects.create(
        name=NAME,
        task=TASK,
        interval=interval,
        args="[]",
        kwargs="{}",
        enabled=True,
        description="Delete click sessions older than CLICKSTREAM_RETENTION_DAYS, in batches, never mid-claim.",
    )
    from django.utils import timezone

    periodic_tasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("clickstream", "0002_drop_redundant_ingest_indexes"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]

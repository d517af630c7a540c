"""Create the periodic "studio: improve" task (interval IMPROVEMENT_INTERVAL_SECONDS); never overwrite an edit."""

from django.db import migrations


def create_schedule(apps, schema_editor):
    from improvement.schedule import ensure_beat_schedule

    ensure_beat_schedule(apps=apps)


def remove_schedule(apps, schema_editor):
    from improvement.schedule import PERIODIC_TASK_NAME

    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=PERIODIC_TASK_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("improvement", "0002_attempts_and_task_id"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]

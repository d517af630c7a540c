"""Create the periodic "studio: interleaving guard" task (every five minutes); never overwrite an edit."""

from django.db import migrations


def create_schedule(apps, schema_editor):
    from improvement.schedule import ensure_guard_schedule

    ensure_guard_schedule(apps=apps)


def remove_schedule(apps, schema_editor):
    from improvement.schedule import GUARD_TASK_NAME

    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=GUARD_TASK_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("improvement", "0005_run_worker_heartbeat_and_demo_trigger"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]

"""App config of the improvement loop."""

from django.apps import AppConfig


class ImprovementConfig(AppConfig):
    """Adjuster, runs, Celery tasks, evaluation."""

    name = "improvement"

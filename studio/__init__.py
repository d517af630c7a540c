"""studio: vector search that learns from clicks."""

from studio.config.celery import app as celery_app

__all__ = ("celery_app",)

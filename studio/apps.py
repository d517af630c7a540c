"""App config of the catalogue, embedding and search app."""

from django.apps import AppConfig


class StudioConfig(AppConfig):
    """The ``studio`` app: catalogue, embedder, search (``studio.catalogue``), API keys (``studio.core``)."""

    name = "studio"
    verbose_name = "Catalogue"

    def ready(self) -> None:
        from studio.catalogue import checks  # noqa: F401  (registers the start-up checks)
        from studio.config import heartbeat  # noqa: F401  (connects the worker heartbeat to Celery's signals)

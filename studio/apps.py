"""App config of the catalogue, embedding and search app."""

from django.apps import AppConfig


class StudioConfig(AppConfig):
    """Catalogue, embedder, search, API keys and health."""

    name = "studio"
    verbose_name = "Catalogue"

    def ready(self) -> None:
        from studio import checks, heartbeat  # noqa: F401  (registers start-up checks, the worker heartbeat)

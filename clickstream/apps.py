"""App config of the clickstream."""

from django.apps import AppConfig


class ClickstreamConfig(AppConfig):
    """Sessions, shown results and events."""

    name = "clickstream"

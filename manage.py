#!/usr/bin/env python
"""Django's command-line utility for studio.

With the embedded defaults (``DATABASE_URL`` / ``CELERY_BROKER_URL`` unset) a command starts the
embedded PostgreSQL and Redis if they are not running, and stops the ones it started when it
exits; under ``make run`` it finds them running and leaves them be.
"""

import os
import sys

# Commands that never touch the database or the broker: nothing is started for them.
_NO_SERVER_COMMANDS = {"help", "--help", "-h", "version", "--version", "makemigrations"}


def main() -> None:
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.config.settings")
    from django.core.management import execute_from_command_line

    from studio.devstack import embedded

    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command in _NO_SERVER_COMMANDS:
        execute_from_command_line(sys.argv)
        return
    embedded.start_servers()
    try:
        execute_from_command_line(sys.argv)
    finally:
        embedded.stop_started()


if __name__ == "__main__":
    main()

"""Project configuration: settings, URLs, the Celery app, WSGI, the worker heartbeat."""

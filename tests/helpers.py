"""Helpers shared by the tests that drive real processes (Celery workers, gunicorn); holds no tests.

Standard library only: a Celery worker that imports a test module (``celery worker --include``)
imports this too, before anything of Django is ready.
"""

from __future__ import annotations

import socket
import time

# A worker under test learns from sessions at once and never loads the embedding model.
WORKER_ENV = {"IMPROVEMENT_SETTLE_SECONDS": "0", "STUDIO_EMBEDDER": "none"}


def wait_for(predicate, *, timeout: float = 120, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a gunicorn started by a test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

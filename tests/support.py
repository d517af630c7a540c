"""Helpers shared by the whole suite (holds no tests): paths, vectors, and driving real processes
(Celery workers, gunicorn).

Standard library only at module level: a Celery worker that imports a test module (``celery worker
--include tests.system.test_reliability_faults``) imports this too, before anything of Django is
ready. Helpers that need Django import it inside the function.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A worker under test learns from sessions at once and never loads the embedding model.
WORKER_ENV = {"IMPROVEMENT_SETTLE_SECONDS": "0", "STUDIO_EMBEDDER": "none"}


def unit_vector(*leading: float, dim: int | None = None) -> list[float]:
    """A D-dimensional vector whose first coordinates are ``leading`` and the rest zero."""
    from django.conf import settings

    dim = dim or settings.STUDIO_EMBEDDING_DIM
    return list(leading) + [0.0] * (dim - len(leading))


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


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that must use this test session's database and broker."""
    from django.conf import settings

    from studio.core import db

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="studio.config.settings",
        DATABASE_URL=db.database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CACHE_URL=settings.CACHE_URL,
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A real Celery worker subprocess consuming this test's own queue."""

    def __init__(self, queue: str, log: Path, **env: str):
        self.queue = queue
        self.log = log
        self.env = subprocess_env(CELERY_TASK_DEFAULT_QUEUE=queue, **env)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "studio",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "-Q",
                self.queue,
                "-n",
                f"{self.queue}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text()[-3000:]}")
            if "ready." in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

"""Test fixtures. The suite runs against a real embedded PostgreSQL + pgvector and Redis under
``STUDIO_DATA_DIR`` (``.studio/test`` in ``make test``), started here when the session begins
(settings start nothing) and stopped at the end if this session started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Start the embedded servers before any test touches the database (settings only name them)."""
    from django.conf import settings

    from studio.devstack import embedded

    embedded.start_servers()
    if not os.environ.get("DATABASE_URL"):
        # A new data dir with a path too long for a socket: pgserver chose the socket dir only now.
        settings.DATABASES["default"]["HOST"] = embedded.postgres_socket_dir()


def pytest_sessionfinish(session, exitstatus):
    from studio.devstack import embedded

    embedded.stop_started()


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttle counters and heartbeats must not leak between tests."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def make_client(db) -> Callable[..., APIClient]:
    """``make_client("search", "ingest")``: an API client holding a key with those scopes."""
    from studio.core.auth import create_api_key

    def factory(*scopes: str) -> APIClient:
        _, plain = create_api_key(name=f"test-{uuid.uuid4().hex[:6]}", scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        client.api_key = plain  # type: ignore[attr-defined]
        return client

    return factory


@pytest.fixture
def catalog_client(make_client) -> APIClient:
    """A client with the catalog scope."""
    return make_client("catalog")


def unit_vector(*leading: float, dim: int | None = None) -> list[float]:
    """A D-dimensional vector whose first coordinates are ``leading`` and the rest zero."""
    from django.conf import settings

    dim = dim or settings.STUDIO_EMBEDDING_DIM
    return list(leading) + [0.0] * (dim - len(leading))


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


@pytest.fixture
def celery_queue(settings) -> str:
    """A queue name private to this test; tasks sent from the test process go there."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    from studio.config.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    yield queue
    app.conf.task_default_queue = previous


@pytest.fixture
def start_worker(celery_queue, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(**env)`` starts a real Celery worker on this test's queue (stopped at teardown).
    Use with ``transactional_db`` so the worker sees committed rows."""
    workers: list[WorkerProcess] = []

    def factory(**env: str) -> WorkerProcess:
        worker = WorkerProcess(celery_queue, tmp_path / f"worker{len(workers)}.log", **env).start()
        workers.append(worker)
        return worker

    yield factory
    for worker in workers:
        worker.stop()

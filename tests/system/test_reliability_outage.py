"""Outages of PostgreSQL and of the broker, with the real servers: a separate embedded PostgreSQL
and Redis in a temporary data dir (never this test session's own), migrated, with gunicorn and a
Celery worker pointed at them. The session's own servers are never stopped.

- PostgreSQL stopped and started under ingestion: the API answers 503 JSON with ``Retry-After``
  (never 500, never HTML) while it is down, and serves again once it is back, without a restart;
  every session a client got accepted is stored exactly once, with all its shown results.
- Broker (Redis) stopped: ingestion and search keep working, health says the broker is down,
  starting a run answers 503 (nothing half-queued); once Redis is back, the same worker catches up
  and learns every session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import requests

from benchmarks._stack import embedded_subprocess
from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow

DIM = 384
RESULTS_PER_SESSION = 4


class Stack:
    """Embedded PostgreSQL + Redis under ``data_dir``, gunicorn and Celery workers using them."""

    def __init__(self, base: Path):
        self.base = base
        self.data_dir = base / "data"
        self.processes: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}
        self.port = 0
        self.key = ""
        self.database_url = ""

    # servers (each call runs in a subprocess whose STUDIO_DATA_DIR is ours, never the session's)
    def _embedded(self, code: str) -> str:
        return embedded_subprocess(code, self.data_dir)

    def start_postgres(self) -> str:
        code = "print(embedded.postgres_url(embedded.ensure_postgres('studio').socket_dir, 'studio'))"
        return self._embedded(code).strip()

    def stop_postgres(self) -> None:
        self._embedded("embedded.stop_postgres()")

    def start_redis(self) -> tuple[str, str]:
        broker, cache = self._embedded("r = embedded.ensure_redis(); print(r.url); print(r.cache_url)").split()
        return broker, cache

    def stop_redis(self) -> None:
        self._embedded("embedded.stop_redis()")

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def up(self) -> Stack:
        self.database_url = self.start_postgres()
        broker, cache = self.start_redis()
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "STUDIO_DATA_DIR"},
            "STUDIO_DATA_DIR": str(self.data_dir),
            "DJANGO_SETTINGS_MODULE": "studio.config.settings",
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": broker,
            "CACHE_URL": cache,
            "CELERY_TASK_DEFAULT_QUEUE": f"outage-{uuid.uuid4().hex[:6]}",
            "STUDIO_EMBEDDER": "none",
            "IMPROVEMENT_SETTLE_SECONDS": "0",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.manage("migrate", "--no-input", "-v", "0")
        scopes = "ingest,sessions:read,search,admin"
        self.key = self.manage("create_api_key", "--name", "outage", "--scopes", scopes).split()[-1]
        self.port = self.start_web()
        return self

    def start_web(self, **overrides: str) -> int:
        """gunicorn on a free loopback port with this stack's environment (plus ``overrides``)."""
        port = free_port()
        log = (self.base / f"gunicorn-{port}.log").open("ab")
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "studio.config.wsgi", "--bind", f"127.0.0.1:{port}"]
            + ["--workers", "2", "--threads", "4", "--graceful-timeout", "5", "--timeout", "60"],
            cwd=ROOT,
            env={**self.env, **overrides},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(web)
        wait_for(lambda: self._web_answers(port), what="gunicorn")
        return port

    def _web_answers(self, port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).status_code in (200, 503)
        except (requests.ConnectionError, requests.Timeout):
            return False

    def start_worker(self) -> subprocess.Popen:
        log_path = self.base / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "studio", "worker", "--pool", "solo", "--loglevel", "INFO"]
            + ["-Q", self.env["CELERY_TASK_DEFAULT_QUEUE"], "--without-mingle", "--without-gossip"],
            cwd=ROOT,
            env=self.env,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(worker)
        wait_for(lambda: "ready." in log_path.read_text(errors="replace"), what="worker ready")
        return worker

    def down(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for stop in (self.stop_redis, self.stop_postgres):
            try:
                stop()
            except subprocess.SubprocessError:
                pass

    # HTTP and direct reads
    def url(self, path: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}{path}"

    def call(
        self, method: str, path: str, body: dict | None = None, timeout: float = 30, port: int | None = None
    ) -> requests.Response:
        return requests.request(
            method,
            self.url(path, port),
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
        )

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        parsed = urlparse(self.database_url)
        with psycopg.connect(host=unquote(parsed.hostname or ""), user="postgres", dbname="studio") as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One separate stack for the module (PostgreSQL init and migrations take a while)."""
    stack = Stack(tmp_path_factory.mktemp("outage"))
    try:
        yield stack.up()
    finally:
        stack.down()


def vector(seed: int) -> list[float]:
    values = [0.0] * DIM
    values[seed % DIM] = 1.0
    values[(seed + 1) % DIM] = 0.5
    return values


def session_body(session_id: str, user: str) -> dict:
    return {
        "session_id": session_id,
        "user_id": user,
        "search_query": "q",
        "query_vector": vector(len(session_id)),
        "search_results": [{"object_id": f"o{i}"} for i in range(RESULTS_PER_SESSION)],
    }


def assert_json_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:500]
    assert response.json()["error"]["code"] == code, response.text[:500]


def test_database_stopped_under_ingestion_gives_503_then_recovers_without_restart(stack):
    accepted: set[str] = set()
    statuses: list[int] = []
    bad: list[str] = []
    stop = threading.Event()

    def ingest(worker: int) -> None:
        number = 0
        while not stop.is_set() and number < 2000:  # bounded
            session_id = f"pg-{worker}-{number}"
            while not stop.is_set():  # a client retries a 503 with the same id (idempotent)
                try:
                    response = stack.call("POST", "/api/v1/clickstream/sessions", session_body(session_id, "u"))
                except requests.RequestException as exc:  # a connection cut by the server restart
                    bad.append(f"transport: {exc}")
                    break
                statuses.append(response.status_code)
                if response.status_code in (200, 201):
                    accepted.add(session_id)
                    break
                if response.status_code != 503 or not response.headers.get("Content-Type", "").startswith(
                    "application/json"
                ):
                    bad.append(f"{response.status_code}: {response.text[:300]}")
                    break
                assert response.headers.get("Retry-After")
                time.sleep(0.05)
            number += 1

    threads = [threading.Thread(target=ingest, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(accepted) >= 10, what="ingestion to run")
        stack.stop_postgres()
        try:
            down = stack.call("POST", "/api/v1/clickstream/sessions", session_body("while-down", "u"))
            assert_json_error(down, 503, "database_unavailable")
            assert down.headers["Retry-After"]
            health = requests.get(stack.url("/api/v1/health"), timeout=30)
            assert health.status_code == 503
            assert health.json()["database"]["ok"] is False
            unauthenticated = requests.get(stack.url("/api/v1/clickstream/sessions/x"), timeout=30)
            assert unauthenticated.status_code in (401, 503)  # never 500
            time.sleep(1.0)  # the ingesting clients meet the outage too
        finally:
            stack.start_postgres()
        before = len(accepted)
        wait_for(lambda: len(accepted) >= before + 10, what="ingestion to resume")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert not bad, bad[:5]
    assert 503 in statuses and 500 not in statuses
    assert requests.get(stack.url("/api/v1/health"), timeout=30).status_code in (200, 503)  # workers may be absent
    assert stack.call("POST", "/api/v1/clickstream/sessions", session_body("after", "u")).status_code == 201
    rows = dict(
        stack.sql(
            "SELECT s.session_id, count(r.id) FROM clickstream_session s "
            "LEFT JOIN clickstream_shownresult r ON r.session_id = s.id "
            "WHERE s.session_id LIKE 'pg-%%' GROUP BY s.session_id"
        )
    )
    assert set(rows) == accepted  # every accepted session is stored, once (session_id is unique)
    assert set(rows.values()) == {RESULTS_PER_SESSION}  # none half-written


def test_redis_stopped_with_the_cache_on_it_ingestion_goes_on(stack):
    stack.stop_redis()
    try:
        created = stack.call("POST", "/api/v1/clickstream/sessions", session_body("cache-down", "u"))
    finally:
        stack.start_redis()
    assert created.status_code == 201, created.text


def test_broker_stopped_ingestion_goes_on_and_improvement_catches_up(stack):
    # The cache off Redis, as in production with an external broker and no CACHE_URL.
    web = stack.start_web(CACHE_URL="")
    stack.start_worker()
    objects = [{"object_id": f"o{i}", "vector": vector(i + 7)} for i in range(RESULTS_PER_SESSION)]
    key_with_catalog = stack.manage("create_api_key", "--name", "cat", "--scopes", "catalog").split()[-1]
    loaded = requests.post(
        stack.url("/api/v1/objects", web),
        json={"objects": objects},
        headers={"Authorization": f"Bearer {key_with_catalog}"},
        timeout=60,
    )
    assert loaded.status_code == 200 and loaded.json()["upserted"] == RESULTS_PER_SESSION, loaded.text

    stack.stop_redis()
    sessions = [f"broker-{n}" for n in range(6)]
    try:
        for n, session_id in enumerate(sessions):
            body = session_body(session_id, f"user{n % 3}")
            created = stack.call("POST", "/api/v1/clickstream/sessions", body, port=web)
            assert created.status_code == 201, created.text
            events = stack.call(
                "POST",
                f"/api/v1/clickstream/sessions/{session_id}/events",
                {"events": [{"event_id": "e1", "object_id": "o2"}]},
                port=web,
            )
            assert events.status_code == 200 and events.json()["accepted"] == 1, events.text
        found = stack.call("POST", "/api/v1/search", {"query_vector": vector(9), "user_id": "user0"}, port=web)
        assert found.status_code == 200, found.text
        health = requests.get(stack.url("/api/v1/health", web), timeout=30)
        assert health.status_code == 503 and health.json()["broker"]["ok"] is False
        refused = stack.call("POST", "/api/v1/improvement/runs", {}, timeout=60, port=web)
        assert_json_error(refused, 503, "broker_unavailable")
        assert stack.sql("SELECT status, error LIKE 'could not be queued%%' FROM improvement_improvementrun") == [
            ("failed", True)
        ]  # recorded as failed, not left queued forever
    finally:
        stack.start_redis()

    wait_for(
        lambda: requests.get(stack.url("/api/v1/health", web), timeout=30).json()["broker"]["ok"], what="broker back"
    )
    started = stack.call("POST", "/api/v1/improvement/runs", {}, port=web)
    assert started.status_code == 202, started.text

    def learned() -> bool:
        statuses = [
            stack.call("GET", f"/api/v1/clickstream/sessions/{session_id}", port=web).json()["improvement"]["status"]
            for session_id in sessions
        ]
        return all(status == "done" for status in statuses)

    wait_for(learned, timeout=180, what="the worker to catch up")
    assert stack.sql("SELECT count(DISTINCT user_id) FROM studio_personalizedobject") == [(3,)]

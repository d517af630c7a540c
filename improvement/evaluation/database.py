"""A throwaway database on the same PostgreSQL server, made the way Django's test runner makes one:
``CREATE DATABASE``, point the default connection at it, migrate; drop it at the end, always."""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Iterator

from django.core.management import call_command
from django.db import connection

logger = logging.getLogger(__name__)


def _admin_execute(sql: str, name: str) -> None:
    """Run CREATE/DROP DATABASE from a maintenance connection (``postgres``), outside any transaction."""
    import psycopg
    from psycopg import sql as pg_sql

    params = connection.settings_dict
    kwargs = {
        "host": params.get("HOST") or None,
        "port": params.get("PORT") or None,
        "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**{k: v for k, v in kwargs.items() if v is not None}) as admin:
        admin.execute(pg_sql.SQL(sql).format(pg_sql.Identifier(name)))


@contextlib.contextmanager
def throwaway_database(*, prefix: str = "studio_eval", verbose: bool = False) -> Iterator[str]:
    """Create ``{prefix}_<random>``, migrate it, make it the default connection's database for the block;
    then restore the original database name and drop the throwaway one, whatever happened."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    original_name = connection.settings_dict["NAME"]
    _admin_execute("CREATE DATABASE {}", name)
    try:
        connection.close()
        connection.settings_dict["NAME"] = name
        out = None if verbose else io.StringIO()
        call_command("migrate", interactive=False, verbosity=1 if verbose else 0, stdout=out)
        yield name
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original_name
        try:
            _admin_execute("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        except Exception:  # noqa: BLE001 — report, never mask the evaluation's own error
            logger.exception("could not drop the throwaway database %s", name)

"""Shared database infrastructure: helpers on the PostgreSQL connection that know no app's models.

Any app may import this module (``clickstream`` included, see DESIGN §1): it holds plain SQL about
the database itself, never a model or a query of one app's tables by meaning.
"""

from __future__ import annotations

from urllib.parse import quote

from django.db import connection


def estimated_row_count(*, table: str) -> int:
    """Planner estimate of a table's rows (``pg_class.reltuples``): instant on any size, unlike COUNT(*)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return max(int(row[0]) if row and row[0] is not None else 0, 0)


def database_url() -> str:
    """A ``DATABASE_URL`` for the database this process is connected to, so that a subprocess (worker,
    gunicorn) reaches the same one — the test database in tests (socket directories percent-encoded)."""
    params = connection.settings_dict
    host = quote(params["HOST"], safe="") if params["HOST"].startswith("/") else params["HOST"]
    port = f":{params['PORT']}" if params.get("PORT") else ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    return f"postgres://{params['USER']}{password}@{host}{port}/{params['NAME']}"

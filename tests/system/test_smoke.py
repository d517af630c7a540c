"""Smoke test of the whole stack: the embedded database has pgvector installed."""

from django.db import connection


def test_pgvector_extension_installed(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone()[0] >= "0.6"

"""studio.management.commands.rebuild_index: the HNSW index is recreated."""

from __future__ import annotations


def test_rebuild_index_command_recreates_the_hnsw_index(db):
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection

    from studio.catalogue.services import HNSW_INDEX_NAME, drop_hnsw_index

    drop_hnsw_index()
    out = StringIO()
    call_command("rebuild_index", stdout=out)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [HNSW_INDEX_NAME])
        (definition,) = cursor.fetchone()
    assert "hnsw" in definition and "vector_cosine_ops" in definition
    assert HNSW_INDEX_NAME in out.getvalue()

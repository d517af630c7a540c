"""studio.catalogue.checks: the start-up system checks, against the real embedded PostgreSQL and Redis."""

from __future__ import annotations

import uuid

import pytest
from django.core.checks import Error, Warning
from django.core.management import CommandError, call_command
from django.db import connection, connections

from studio.catalogue import checks


def _wrapper(**overrides):
    """A separate connection wrapper on the same server, with some settings changed."""
    return connections["default"].__class__(
        {**connection.settings_dict, **overrides}, alias=f"check-{uuid.uuid4().hex[:6]}"
    )


def _other_metric(metric: str) -> str:
    return "euclid" if metric != "euclid" else "cosine"


def test_healthy_database_has_no_messages(db):
    assert checks.inspect_database(connection=connection) == []


def test_unreachable_database_is_an_error_naming_the_database(db, tmp_path):
    unreachable = _wrapper(HOST=str(tmp_path / "no-server-here"), PORT="")
    try:
        messages = checks.inspect_database(connection=unreachable)
    finally:
        unreachable.close()
    assert [m.id for m in messages] == ["studio.E001"]
    assert isinstance(messages[0], Error)
    assert connection.settings_dict["NAME"] in messages[0].msg
    assert messages[0].hint


def test_fresh_database_without_pgvector_is_fine_until_tables_exist(db):
    name = f"studio_check_{uuid.uuid4().hex[:8]}"
    admin = _wrapper(NAME="postgres")
    admin.ensure_connection()
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    fresh = _wrapper(NAME=name)
    try:
        # pgvector is available on the server, so the first migration can create the extension.
        assert checks.inspect_database(connection=fresh) == []
        with fresh.cursor() as cursor:
            cursor.execute("CREATE TABLE studio_objectpart (id bigint)")
        messages = checks.inspect_database(connection=fresh)
        assert [m.id for m in messages] == ["studio.E002"]
        assert "CREATE EXTENSION vector" in messages[0].hint
    finally:
        fresh.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def test_pgvector_missing_or_too_old_messages():
    missing = checks.pgvector_messages(installed=None, available=None, tables_exist=False)
    assert [m.id for m in missing] == ["studio.E002"]
    assert "pgvector" in missing[0].hint and "DATABASE_URL" in missing[0].hint
    old = checks.pgvector_messages(installed="0.5.1", available="0.5.1", tables_exist=True)
    assert [m.id for m in old] == ["studio.E005"]
    before_iterative_scans = checks.pgvector_messages(installed="0.7.4", available="0.7.4", tables_exist=True)
    assert [m.id for m in before_iterative_scans] == ["studio.E005"]
    assert "0.7.4" in before_iterative_scans[0].msg and ">= 0.8" in before_iterative_scans[0].msg
    assert checks.pgvector_messages(installed="0.8.0", available="0.8.0", tables_exist=True) == []


def test_dimension_mismatch_names_column_setting_and_fix(db, settings):
    wrong = settings.STUDIO_EMBEDDING_DIM * 2
    messages = checks.inspect_database(connection=connection, dim=wrong)
    assert {m.id for m in messages} == {"studio.E003"}
    columns = {m.msg.split(" but ")[1].split(" holds")[0] for m in messages}
    assert columns == {"studio_objectpart.vector", "studio_personalizedpart.vector", "clickstream_session.query_vector"}
    first = messages[0]
    assert f"STUDIO_EMBEDDING_DIM={wrong}" in first.msg
    assert f"STUDIO_EMBEDDING_DIM={settings.STUDIO_EMBEDDING_DIM}" in first.hint
    assert "make clean-data" in first.hint


def test_metric_mismatch_names_both_operator_classes(db, settings):
    metric = _other_metric(settings.STUDIO_METRIC)
    messages = checks.inspect_database(connection=connection, metric=metric)
    assert [m.id for m in messages] == ["studio.E004"]
    assert checks.HNSW_OPCLASS[metric] in messages[0].msg
    assert checks.HNSW_OPCLASS[settings.STUDIO_METRIC] in messages[0].msg
    assert "rebuild_index" in messages[0].hint


def test_missing_hnsw_index_is_a_warning(db):
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {checks.HNSW_INDEX_NAME}")  # rolled back with the test's transaction
    messages = checks.inspect_database(connection=connection)
    assert [m.id for m in messages] == ["studio.W001"]
    assert isinstance(messages[0], Warning)


def test_broker_reachable_and_unreachable():
    assert checks.inspect_broker() == []
    messages = checks.inspect_broker(url="redis://127.0.0.1:1/0", timeout=1)
    assert [m.id for m in messages] == ["studio.W002"]
    assert "CELERY_BROKER_URL" in messages[0].hint


def test_registered_checks_run_with_check_database(db, settings):
    call_command("check", "--database", "default")  # healthy: no error raised
    settings.STUDIO_EMBEDDING_DIM = settings.STUDIO_EMBEDDING_DIM + 1
    with pytest.raises(CommandError, match="studio.E003"):
        call_command("check", "--database", "default")


def test_registered_checks_skip_without_databases(db, settings):
    settings.STUDIO_EMBEDDING_DIM = settings.STUDIO_EMBEDDING_DIM + 1
    assert checks.check_database(databases=None) == []
    assert checks.check_broker(databases=None) == []

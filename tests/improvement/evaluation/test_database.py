"""improvement.evaluation.database: the throwaway database is dropped even on error."""

from __future__ import annotations

import pytest
from django.db import connection

from improvement.evaluation.database import throwaway_database
from tests.improvement.evaluation.support import evaluation_databases


def test_throwaway_database_is_dropped_even_on_error(unblocked_database):
    original = connection.settings_dict["NAME"]
    with pytest.raises(RuntimeError), throwaway_database() as name:
        assert connection.settings_dict["NAME"] == name
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM studio_object")  # migrated
            assert cursor.fetchone()[0] == 0
        raise RuntimeError("boom")
    assert connection.settings_dict["NAME"] == original
    assert name not in evaluation_databases()

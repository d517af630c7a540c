"""studio.core.db: the binary COPY stream both part tables are written with, and the row estimate."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from django.db import connection

from studio.core import db as core_db


def test_parts_copy_stream_has_postgres_binary_framing():
    stream = core_db.parts_copy_stream(
        owner_ids=[7], indices=[2], vectors=np.array([[1.5, -2.0]], dtype=np.float32), is_average=[True]
    )
    assert stream[:11] == b"PGCOPY\n\xff\r\n\x00" and stream[11:19] == b"\x00" * 8
    assert stream[-2:] == b"\xff\xff"
    row = stream[19:-2]
    fields, owner_len, owner, index_len, index, vector_len, dim, unused = struct.unpack(">hiqihihh", row[:28])
    assert (fields, owner_len, owner, index_len, index) == (4, 8, 7, 2, 2)
    assert (vector_len, dim, unused) == (4 + 4 * 2, 2, 0)
    assert struct.unpack(">ff", row[28:36]) == (1.5, -2.0)
    assert struct.unpack(">ib", row[36:]) == (1, 1)


@pytest.mark.parametrize("kind", ["vector", "halfvec"])
def test_parts_copy_stream_round_trips_through_postgres(db, kind):
    """Originals' parts as float32 ``vector``, copies' as float16 ``halfvec`` (values exact in float16 here)."""
    vectors = np.array([[0.25, -1.0, 3.0], [0.125, 0.0, -7.5], [2.0, 2.0, 2.0]], dtype=np.float32)
    stream = core_db.parts_copy_stream(
        owner_ids=np.array([1, 1, 9], dtype=np.int64),
        indices=np.array([0, 1, 0]),
        vectors=vectors,
        is_average=[False, True, False],
        kind=kind,
    )
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE copied (owner bigint, index smallint, vector {kind}(3), is_average boolean)")
        with cursor.copy("COPY copied (owner, index, vector, is_average) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(stream)
        cursor.execute("SELECT owner, index, vector::text, is_average FROM copied ORDER BY owner, index")
        rows = cursor.fetchall()
    assert [(owner, index, average) for owner, index, _, average in rows] == [
        (1, 0, False),
        (1, 1, True),
        (9, 0, False),
    ]
    stored = np.array([[float(x) for x in text.strip("[]").split(",")] for _, _, text, _ in rows], dtype=np.float32)
    assert np.array_equal(stored, vectors)


def test_halfvec_stream_rounds_like_float16(db):
    vector = np.array([[0.1, 1 / 3, -2.71828]], dtype=np.float32)
    stream = core_db.parts_copy_stream(owner_ids=[1], indices=[0], vectors=vector, is_average=[False], kind="halfvec")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE half (owner bigint, index smallint, vector halfvec(3), is_average boolean)")
        with cursor.copy("COPY half (owner, index, vector, is_average) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(stream)
        cursor.execute("SELECT vector::vector::text FROM half")
        stored = np.array([float(x) for x in cursor.fetchone()[0].strip("[]").split(",")], dtype=np.float32)
    assert np.array_equal(stored, vector[0].astype(np.float16).astype(np.float32))


def test_estimated_row_count_is_never_negative(db):
    assert core_db.estimated_row_count(table="no_such_table") == 0
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE never_analyzed (x int)")
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'never_analyzed'::regclass")
        assert cursor.fetchone()[0] == -1  # PostgreSQL 14+: "never vacuumed or analyzed"
    assert core_db.estimated_row_count(table="never_analyzed") == 0

"""Shared database infrastructure: helpers on the PostgreSQL connection that know no app's models.

Any app may import this module (``clickstream`` included; docs/architecture.md, "Rooms"): it holds plain SQL about
the database itself, never a model or a query of one app's tables by meaning.
"""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
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


# PostgreSQL's binary COPY framing: signature, flags, header extension length … rows … trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"


# pgvector's binary forms: dim int16, unused int16, then dim float32 (vector) or float16 (halfvec), big-endian.
_VECTOR_ELEMENT = {"vector": ">f4", "halfvec": ">f2"}


def _part_row_dtype(dim: int, kind: str) -> np.dtype:
    # One binary row: field count, then (length, value) per field, big-endian.
    return np.dtype(
        [
            ("fields", ">i2"),
            ("owner_len", ">i4"),
            ("owner", ">i8"),
            ("index_len", ">i4"),
            ("index", ">i2"),
            ("vector_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vector", _VECTOR_ELEMENT[kind], (dim,)),
            ("average_len", ">i4"),
            ("average", "u1"),
        ]
    )


def parts_copy_stream(*, owner_ids, indices, vectors: np.ndarray, is_average, kind: str = "vector") -> bytes:
    """A complete binary ``COPY <parts table> (<owner bigint>, index smallint, vector, is_average boolean)
    FROM STDIN (FORMAT BINARY)`` stream, built by numpy in one pass: no per-float text formatting.
    Serves both part tables: the originals' (``kind="vector"``) and the copies' (``kind="halfvec"``)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    rows, dim = vectors.shape
    table = np.empty(rows, dtype=_part_row_dtype(dim, kind))
    table["fields"] = 4
    table["owner_len"] = 8
    table["owner"] = owner_ids
    table["index_len"] = 2
    table["index"] = indices
    table["vector_len"] = 4 + np.dtype(_VECTOR_ELEMENT[kind]).itemsize * dim
    table["dim"] = dim
    table["unused"] = 0
    table["vector"] = vectors
    table["average_len"] = 1
    table["average"] = is_average
    return _COPY_HEADER + table.tobytes() + _COPY_TRAILER

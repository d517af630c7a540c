"""Per-user personalized copies of catalogue objects: the bulk reads and writes of improvement runs.

Improvement runs read originals and copies here and write copies only through ``write_copies``;
nothing in this module ever writes an original (``studio_object`` / ``studio_objectpart``).

Vectors travel in PostgreSQL's binary format (pgvector: int16 dim, int16 unused, dim × float32,
big-endian; copies are stored as halfvec, written as float16 and read back cast to vector) both ways:
reading 100k vectors as text and parsing them costs seconds, binary costs milliseconds, and writing
uses one binary ``COPY`` built with numpy instead of a row per vector.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg.adapt import Loader
from psycopg.pq import Format

from studio.core import db

_vector_oids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Copies are stored as halfvec (float16: half the bytes of vector; ~3 significant digits, |x| ≤ 65,504).
HALFVEC_MAX = 65504.0


class _VectorBinaryLoader(Loader):
    """pgvector binary, kept as raw bytes: ``stack_vectors`` converts a whole result in one numpy call
    (a numpy call per row costs more than the query)."""

    format = Format.BINARY

    def load(self, data):
        return bytes(data)


def _raw_connection():
    connection.ensure_connection()
    return connection.connection


def _vector_oid(raw) -> int:
    oid = _vector_oids.get(raw)
    if oid is None:
        with raw.cursor() as cursor:
            cursor.execute("SELECT 'vector'::regtype::oid")
            oid = int(cursor.fetchone()[0])
        _vector_oids[raw] = oid
    return oid


class _BinaryCursor(psycopg.Cursor):
    """A server-side-binding cursor whose results come in binary (Django's own cursors bind client-side)."""

    def execute(self, query, params=None, *, prepare=None, binary=True):
        return super().execute(query, params, prepare=prepare, binary=binary)


def binary_cursor():
    """A psycopg cursor on Django's connection (so inside the caller's transaction), in binary mode,
    that returns ``vector`` columns as numpy arrays. The loader is registered on this cursor only:
    other code sharing the connection keeps pgvector's usual values."""
    raw = _raw_connection()
    oid = _vector_oid(raw)
    cursor = _BinaryCursor(raw)
    cursor.adapters.register_loader(oid, _VectorBinaryLoader)
    return cursor


def stack_vectors(raw_vectors: Sequence[bytes], dim: int) -> np.ndarray:
    """Vectors loaded by ``binary_cursor`` as one native float32 (n × dim) matrix.

    Each value is pgvector's binary form: int16 dim, int16 unused, dim big-endian float32; so the
    joined bytes are an (n × (dim + 1)) big-endian float32 matrix whose first column is the header.
    """
    if not raw_vectors:
        return np.zeros((0, dim), dtype=np.float32)
    matrix = np.frombuffer(b"".join(raw_vectors), dtype=">f4").reshape(len(raw_vectors), dim + 1)
    return matrix[:, 1:].astype(np.float32)


@dataclass
class StoredVectors:
    """The parts of an original (``pk`` = Object id) or of a copy (``pk`` = PersonalizedObject id)."""

    pk: int
    vectors: np.ndarray  # (parts × D) float32, in part index order
    is_average: np.ndarray  # (parts,) bool
    taught_at: object = None  # copies: when a run last wrote it (datetime); originals: None
    version: object = None  # originals: ``updated_at`` when read, the fence against a re-upsert during a run


def _group_parts(rows: list, key_of, dim: int, *, more_fields=None) -> dict:
    """Rows ``(owner pk, part index, …, is_average, vector)`` in any order → {key: StoredVectors}, parts in
    index order (one stack for all vectors). Sorting here, not in SQL: PostgreSQL would sort the wide rows,
    vectors included, and spill them to disk (85 ms of a 220 ms read of 18,000 originals)."""
    if not rows:
        return {}
    rows.sort(key=itemgetter(0, 1))
    matrix = stack_vectors([row[-1] for row in rows], dim)
    averages = np.fromiter((bool(row[-2]) for row in rows), dtype=bool, count=len(rows))
    owners = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(owners)) + 1, [len(rows)])).tolist()
    grouped: dict = {}
    for start, end in itertools.pairwise(bounds):
        row = rows[start]
        grouped[key_of(row)] = StoredVectors(
            pk=int(row[0]),
            vectors=matrix[start:end],
            is_average=averages[start:end],
            **(more_fields(row) if more_fields else {}),
        )
    return grouped


def original_vectors(*, object_ids: Sequence[str]) -> dict[str, StoredVectors]:
    """The parts of the originals with these ``object_id`` s, in one query; missing ids are absent."""
    if not object_ids:
        return {}
    with binary_cursor() as cursor:
        cursor.execute(
            "SELECT o.id, p.index, o.object_id, o.updated_at, p.is_average, p.vector FROM studio_object o "
            "JOIN studio_objectpart p ON p.object_id = o.id "
            "WHERE o.object_id = ANY(%b::text[])",
            [list(object_ids)],
        )
        rows = cursor.fetchall()
    return _group_parts(
        rows, lambda row: row[2], settings.STUDIO_EMBEDDING_DIM, more_fields=lambda row: {"version": row[3]}
    )


def changed_originals(cursor, *, versions: dict[int, object]) -> set[int]:
    """Of these originals (pk → ``updated_at`` read earlier), those re-upserted or deleted since; the rest
    are locked ``FOR SHARE`` until the caller's transaction ends, so none can change before it commits."""
    if not versions:
        return set()
    pks = sorted(versions)
    cursor.execute("SELECT id, updated_at FROM studio_object WHERE id = ANY(%s) ORDER BY id FOR SHARE", [pks])
    current = dict(cursor.fetchall())
    return {pk for pk in pks if current.get(pk) != versions[pk]}


def user_copy_vectors(*, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], StoredVectors]:
    """The users' current copies for these ``(user_id, original pk)`` pairs, in one query."""
    if not keys:
        return {}
    with binary_cursor() as cursor:
        cursor.execute(
            "SELECT po.id, pp.index, po.user_id, po.original_id, po.updated_at, pp.is_average, pp.vector::vector "
            "FROM unnest(%b::text[], %b::bigint[]) AS k(user_id, original_id) "
            "JOIN studio_personalizedobject po ON po.original_id = k.original_id AND po.user_id = k.user_id "
            "JOIN studio_personalizedpart pp ON pp.personalized_id = po.id",
            [[user for user, _ in keys], [int(pk) for _, pk in keys]],
        )
        rows = cursor.fetchall()
    return _group_parts(
        rows,
        lambda row: (row[2], int(row[3])),
        settings.STUDIO_EMBEDDING_DIM,
        more_fields=lambda row: {"taught_at": row[4]},
    )


def cosine_drifts(*, originals: Sequence[np.ndarray], adjusted: Sequence[np.ndarray]) -> np.ndarray:
    """Per object, the largest cosine distance between its adjusted parts and the original's
    (``studio.catalogue.services.cosine_drift``, vectorized over many objects)."""
    if not originals:
        return np.zeros(0, dtype=np.float64)
    counts = np.fromiter((len(o) for o in originals), dtype=np.int64, count=len(originals))
    a = np.concatenate(originals, dtype=np.float32)
    b = np.concatenate(adjusted, dtype=np.float32)
    dots = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64) * np.einsum("ij,ij->i", b, b, dtype=np.float64))
    distances = 1.0 - dots / np.maximum(norms, 1e-24)
    if len(distances) == len(originals):  # one part each: nothing to reduce
        return np.maximum(distances, 0.0)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.maximum(np.maximum.reduceat(distances, starts), 0.0)


@dataclass
class CopyWrite:
    """One (user, original) copy to write: its new parts and the original's (for the drift)."""

    user_id: str
    original_pk: int
    original_object_id: str
    vectors: np.ndarray  # (parts × D)
    original_vectors: np.ndarray  # (parts × D)
    is_average: np.ndarray  # (parts,) bool


@dataclass
class WriteReport:
    """What ``write_copies`` wrote, aligned with its input."""

    ids: list[int]
    drifts: np.ndarray
    created: int
    updated: int


_UPSERT_COPIES = """
INSERT INTO studio_personalizedobject AS po (original_id, user_id, object_id, updated_at, updates, last_run, drift)
SELECT k.original_id, k.user_id, k.object_id, %(now)s::timestamptz, 1, %(run)s::bigint, k.drift
FROM unnest(%(original)b::bigint[], %(user)b::text[], %(object_id)b::text[], %(drift)b::float8[])
    AS k(original_id, user_id, object_id, drift)
ORDER BY k.original_id, k.user_id  -- one lock order for every writer
ON CONFLICT (original_id, user_id) DO UPDATE SET
    -- ``updates`` counts runs: a second batch of the same run does not count again
    updates = po.updates + CASE WHEN EXCLUDED.last_run IS NOT NULL AND po.last_run = EXCLUDED.last_run
                                THEN 0 ELSE 1 END,
    last_run = EXCLUDED.last_run,
    drift = EXCLUDED.drift,
    updated_at = EXCLUDED.updated_at
RETURNING po.id, po.original_id, po.user_id, (po.xmax = 0) AS inserted
"""


_EVICT_BEYOND_CAP = """
WITH ranked AS (
    SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY updated_at DESC, id DESC) AS n
    FROM studio_personalizedobject WHERE user_id = ANY(%(users)s)
),
doomed AS MATERIALIZED (SELECT id FROM ranked WHERE n > %(cap)s),
parts AS (DELETE FROM studio_personalizedpart WHERE personalized_id IN (SELECT id FROM doomed))
DELETE FROM studio_personalizedobject WHERE id IN (SELECT id FROM doomed)
"""

_DELETE_DECAYED = """
WITH doomed AS MATERIALIZED (
    SELECT id FROM studio_personalizedobject
    WHERE updated_at < %(now)s - make_interval(secs => %(half_life)s)
      AND drift * power(0.5, extract(epoch FROM %(now)s - updated_at) / %(half_life)s) < %(epsilon)s
    LIMIT %(limit)s
),
parts AS (DELETE FROM studio_personalizedpart WHERE personalized_id IN (SELECT id FROM doomed))
DELETE FROM studio_personalizedobject WHERE id IN (SELECT id FROM doomed)
"""

# A copy whose remaining drift from its original (after decay) is below this is the original again.
DECAYED_EPSILON = 1e-4


def evict_beyond_cap(*, user_ids: Sequence[str], cap: int) -> int:
    """Delete each of these users' copies beyond ``cap``, least recently taught first; how many went.

    Call in the transaction that wrote the copies, so the bound holds at every commit."""
    if not user_ids or cap <= 0:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_EVICT_BEYOND_CAP, {"users": sorted(set(user_ids)), "cap": cap})
        return cursor.rowcount


def delete_decayed_copies(*, half_life_days: float, limit: int = 10000) -> int:
    """Delete (up to ``limit``) copies that decayed back to their original: their drift, halved every
    ``half_life_days`` since they were last taught, is below ``DECAYED_EPSILON``. 0 days: never."""
    if half_life_days <= 0:
        return 0
    params = {"now": timezone.now(), "half_life": half_life_days * 86400.0, "epsilon": DECAYED_EPSILON, "limit": limit}
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_DECAYED, params)
        return cursor.rowcount


def decay_factor(*, taught_at, now, half_life_days: float) -> float:
    """How much of a copy's learned offset from its original remains: ``0.5 ** (age / half-life)``."""
    if half_life_days <= 0 or taught_at is None:
        return 1.0
    age_days = max((now - taught_at).total_seconds(), 0.0) / 86400.0
    return 0.5 ** (age_days / half_life_days)


def write_copies(*, copies: Sequence[CopyWrite], run_id: int | None) -> WriteReport:
    """Upsert these personalized copies and replace their parts, in bulk (three statements).

    Call inside the caller's transaction (an improvement batch is one transaction). Each
    (user, original) may appear once. Vectors must be finite; ``drift`` is computed here, as the
    largest cosine distance of a part from the original's part.
    """
    if not copies:
        return WriteReport(ids=[], drifts=np.zeros(0), created=0, updated=0)
    keys = [(c.original_pk, c.user_id) for c in copies]
    _check_copies(copies, keys)
    drifts = cosine_drifts(originals=[c.original_vectors for c in copies], adjusted=[c.vectors for c in copies])
    # Server-side binding (binary parameters): Django's client-side binding would spell 100k array
    # elements into the SQL text.
    with binary_cursor() as cursor:
        returned = _upsert_copy_rows(cursor, copies, drifts=drifts, run_id=run_id)
        ids = [returned[key][0] for key in keys]
        _write_parts_in_place(cursor, copies, ids, replaced=[not returned[key][1] for key in keys])
    created = sum(1 for key in keys if returned[key][1])
    return WriteReport(ids=ids, drifts=drifts, created=created, updated=len(keys) - created)


def _check_copies(copies: Sequence[CopyWrite], keys: list[tuple[int, str]]) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError("write_copies: each (user, original) may appear once")
    for copy in copies:
        if copy.vectors.shape != copy.original_vectors.shape:
            raise ValueError(f"write_copies: {copy.original_object_id} for {copy.user_id}: parts differ in shape")
        if not np.isfinite(copy.vectors).all():
            raise ValueError(f"write_copies: {copy.original_object_id} for {copy.user_id}: non-finite vector")
        if np.abs(copy.vectors).max(initial=0.0) > HALFVEC_MAX:
            raise ValueError(f"write_copies: {copy.original_object_id} for {copy.user_id}: beyond halfvec's range")


def _upsert_copy_rows(cursor, copies: Sequence[CopyWrite], *, drifts: np.ndarray, run_id: int | None) -> dict:
    """Upsert the copies' rows; ``{(original pk, user): (copy pk, inserted)}``."""
    cursor.execute(
        _UPSERT_COPIES,
        {
            "now": timezone.now(),
            "run": run_id,
            "original": [c.original_pk for c in copies],
            "user": [c.user_id for c in copies],
            "object_id": [f"{c.original_object_id}_{c.user_id}" for c in copies],
            "drift": [float(d) for d in drifts],
        },
    )
    return {(int(original), user): (int(pk), inserted) for pk, original, user, inserted in cursor.fetchall()}


_STAGE_PARTS = """
CREATE TEMP TABLE IF NOT EXISTS staged_copy_parts (
    personalized_id bigint, index smallint, vector halfvec, is_average boolean
) ON COMMIT DELETE ROWS
"""

# In place: a copy taught again keeps its part rows (an UPDATE, HOT where the page has room: the vector is in
# no index) instead of a DELETE and an INSERT that leave dead rows and index entries behind.
_MERGE_STAGED_PARTS = """
INSERT INTO studio_personalizedpart (personalized_id, index, vector, is_average)
SELECT personalized_id, index, vector, is_average FROM staged_copy_parts
ORDER BY personalized_id, index  -- one lock order for every writer
ON CONFLICT (personalized_id, index) DO UPDATE SET vector = EXCLUDED.vector, is_average = EXCLUDED.is_average
"""

# A replaced copy whose original now has fewer parts: its extra parts go.
_DELETE_EXTRA_PARTS = """
DELETE FROM studio_personalizedpart pp USING unnest(%b::bigint[], %b::int[]) AS k(id, parts)
WHERE pp.personalized_id = k.id AND pp.index >= k.parts
"""


def _write_parts_in_place(cursor, copies: Sequence[CopyWrite], ids: list[int], *, replaced: list[bool]) -> None:
    """Every copy's parts: one binary COPY into a transaction-scoped staging table, then one upsert."""
    counts = np.fromiter((len(c.vectors) for c in copies), dtype=np.int64, count=len(copies))
    stream = db.parts_copy_stream(
        owner_ids=np.repeat(np.asarray(ids, dtype=np.int64), counts),
        indices=np.concatenate([np.arange(n, dtype=np.int16) for n in counts]),
        vectors=np.concatenate([c.vectors for c in copies]).astype(np.float32, copy=False),
        is_average=np.concatenate([np.asarray(c.is_average, dtype=bool) for c in copies]),
        kind="halfvec",
    )
    cursor.execute(_STAGE_PARTS)
    with cursor.copy(
        "COPY staged_copy_parts (personalized_id, index, vector, is_average) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(stream)
    cursor.execute(_MERGE_STAGED_PARTS)
    cursor.execute("TRUNCATE staged_copy_parts")  # a second batch in the same transaction starts empty
    again = [(pk, int(n)) for pk, n, was in zip(ids, counts, replaced, strict=True) if was]
    if again:
        cursor.execute(_DELETE_EXTRA_PARTS, [[pk for pk, _ in again], [n for _, n in again]])


_DELETE_USER_COPIES = """
WITH doomed AS MATERIALIZED (SELECT id FROM studio_personalizedobject WHERE user_id = %s FOR UPDATE),
parts AS (DELETE FROM studio_personalizedpart WHERE personalized_id IN (SELECT id FROM doomed) RETURNING 1),
copies AS (DELETE FROM studio_personalizedobject WHERE id IN (SELECT id FROM doomed) RETURNING 1)
SELECT (SELECT count(*) FROM copies), (SELECT count(*) FROM parts)
"""


def delete_user_copies(*, user_id: str) -> dict[str, int]:
    """Delete all of one user's personalized copies with their parts (one statement, atomic on its own).

    Returns ``{"personalized_objects": n, "personalized_parts": m}``.
    """
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_USER_COPIES, [user_id])
        copies, parts = cursor.fetchone()
    return {"personalized_objects": int(copies), "personalized_parts": int(parts)}

"""Catalogue writes: upserting and deleting original Objects, writing personalized copies.

Originals are written only here, and only by catalogue calls; improvement runs write
personalized copies through ``studio.catalogue.personalization`` and never touch an original.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from studio.catalogue import embedding
from studio.catalogue.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart
from studio.core import db


@dataclass
class ObjectInput:
    """One object to upsert: its parts are given as vectors, or made from ``text``."""

    object_id: str
    payload: dict = field(default_factory=dict)
    text: str = ""
    vectors: Sequence[Sequence[float]] | None = None  # lists or float32 arrays; None: embed ``text``
    add_average: bool = False


def _average(vectors: Sequence[Sequence[float]]) -> np.ndarray:
    mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    if settings.STUDIO_METRIC == "cosine":
        norm = np.linalg.norm(mean)
        if norm > 0:
            mean = mean / norm
    return mean.astype(np.float32)


def build_parts(items: Sequence[ObjectInput]) -> list[list[tuple[Sequence[float], bool]]]:
    """Resolve every item's parts as ``[(vector, is_average), …]``, embedding text in one batch.

    Vectors come back as given (lists or arrays); embedded and average ones as float32 arrays.
    """
    chunks: list[str] = []
    owners: list[int] = []
    for position, item in enumerate(items):
        if item.vectors is None:
            for chunk in embedding.split_text(item.text):
                chunks.append(chunk)
                owners.append(position)
    embedded = embedding.embed_texts(chunks) if chunks else np.zeros((0, settings.STUDIO_EMBEDDING_DIM))
    from_text: dict[int, list[np.ndarray]] = {}
    for owner, vector in zip(owners, embedded, strict=True):
        from_text.setdefault(owner, []).append(vector)
    result = []
    for position, item in enumerate(items):
        vectors = item.vectors if item.vectors is not None else from_text[position]
        parts: list[tuple[Sequence[float], bool]] = [(vector, False) for vector in vectors]
        # Long text split into several chunks gets an average part too, as do clients that ask for one.
        if len(vectors) > 1 and (item.add_average or item.vectors is None):
            parts.append((_average(vectors), True))
        result.append(parts)
    return result


def upsert_objects(*, items: Sequence[ObjectInput]) -> int:
    """Insert or replace objects and their parts in one transaction; returns how many were written.

    Replacing an original replaces all of its parts, and (``STUDIO_DROP_PERSONALIZED_ON_UPDATE``)
    deletes its personalized copies: the vectors they were learned from are gone. Text is embedded
    before the transaction opens, so no row lock waits on the model.
    """
    if not items:
        return 0
    parts = build_parts(items)
    rows = [
        (item.object_id, item.payload, item.text, [vector for vector, _ in p], [avg for _, avg in p])
        for item, p in zip(items, parts, strict=True)
    ]
    return _write_batch(rows)


@transaction.atomic
def delete_object(*, object_id: str) -> dict[str, int] | None:
    """Delete an original with its parts and all personalized copies; None if it does not exist."""
    obj = Object.objects.select_for_update().filter(object_id=object_id).first()
    if obj is None:
        return None
    copies = PersonalizedObject.objects.filter(original=obj)
    count = copies.count()
    PersonalizedPart.objects.filter(personalized__original=obj).delete()
    copies.delete()
    ObjectPart.objects.filter(object=obj).delete()
    obj.delete()
    return {"deleted": 1, "personalized_deleted": count}


def copy_objects(
    *,
    rows: Iterable[tuple],
    batch_size: int = 5000,
    on_batch: Callable[[int], object] | None = None,
) -> int:
    """Bulk-load objects through COPY (``manage.py load_objects``); existing ids are replaced.

    ``rows`` yields ``(object_id, payload, text, vectors)`` with vectors already resolved (lists
    or arrays), optionally with a fifth element: one ``is_average`` flag per vector. Each batch is
    its own transaction; within a batch a later row with the same id wins, as in a sequence of
    upserts. Replacing an id follows ``upsert_objects`` (parts replaced, copies dropped).

    ``rows`` is consumed by a background thread, so that reading and validating the next batch
    (Python) overlaps the database writing this one; it must therefore not use the database.
    """
    total = 0
    with closing(_read_ahead(rows, batch_size=batch_size)) as batches:
        for batch in batches:
            total += _copy_batch(batch)
            if on_batch:
                on_batch(len(batch))
    return total


_END = object()


def _read_ahead(rows: Iterable[tuple], *, batch_size: int, depth: int = 2) -> Iterator[list[tuple]]:
    """Batches of ``rows``, read by a background thread at most ``depth`` batches ahead."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            batch: list[tuple] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= batch_size:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
            put(_END)
        except BaseException as exc:  # noqa: BLE001  handed to the consuming thread, raised there
            put(exc)

    reader = threading.Thread(target=produce, name="copy-objects-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=10)


def _copy_batch(batch: list[tuple]) -> int:
    unique = {row[0]: row for row in batch}
    rows = []
    for row in unique.values():
        object_id, payload, text, vectors = row[:4]
        flags = list(row[4]) if len(row) > 4 else [False] * len(vectors)
        rows.append((object_id, payload, text, vectors, flags))
    return _write_batch(rows)


@transaction.atomic
def _write_batch(rows: list[tuple[str, dict, str, Sequence[Sequence[float]], list[bool]]]) -> int:
    """Upsert objects (distinct ids) and replace their parts: one INSERT … ON CONFLICT, one binary COPY."""
    # A fixed order takes the row locks in a fixed order: two overlapping batches cannot deadlock.
    rows = sorted(rows, key=lambda row: row[0])
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO studio_object (object_id, payload, text, created_at, updated_at) "
            "SELECT t.object_id, t.payload::jsonb, t.text, %s, %s "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(object_id, payload, text) "
            "ON CONFLICT (object_id) DO UPDATE SET payload = EXCLUDED.payload, text = EXCLUDED.text, "
            "updated_at = EXCLUDED.updated_at "
            "RETURNING id, object_id",
            [
                now,
                now,
                [row[0] for row in rows],
                [json.dumps(row[1], ensure_ascii=False) for row in rows],
                [row[2] or "" for row in rows],
            ],
        )
        pk_of = {object_id: pk for pk, object_id in cursor.fetchall()}
        pks = [pk_of[row[0]] for row in rows]
        if settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE:
            # Raw deletes, children first: Django's foreign keys carry no ON DELETE CASCADE in the database.
            cursor.execute(
                "DELETE FROM studio_personalizedpart WHERE personalized_id IN "
                "(SELECT id FROM studio_personalizedobject WHERE original_id = ANY(%s))",
                [pks],
            )
            cursor.execute("DELETE FROM studio_personalizedobject WHERE original_id = ANY(%s)", [pks])
        cursor.execute("DELETE FROM studio_objectpart WHERE object_id = ANY(%s)", [pks])
        _copy_parts(cursor, pks=pks, vectors=[row[3] for row in rows], flags=[row[4] for row in rows])
    return len(rows)


def _copy_parts(cursor, *, pks: list[int], vectors: list[Sequence[Sequence[float]]], flags: list[list[bool]]) -> None:
    """Insert parts with one binary COPY built by numpy: no per-float text formatting or parsing."""
    counts = [len(object_vectors) for object_vectors in vectors]
    total = sum(counts)
    if not total:
        return
    stream = db.parts_copy_stream(
        owner_ids=np.repeat(np.asarray(pks, dtype=np.int64), counts),
        indices=np.concatenate([np.arange(count) for count in counts]),
        vectors=np.asarray([vector for object_vectors in vectors for vector in object_vectors], dtype=np.float32),
        is_average=[flag for object_flags in flags for flag in object_flags],
    )
    with cursor.copy(
        'COPY studio_objectpart (object_id, "index", vector, is_average) FROM STDIN WITH (FORMAT BINARY)'
    ) as copy:
        copy.write(stream)


HNSW_OPCLASS = {"cosine": "vector_cosine_ops", "dot": "vector_ip_ops", "euclid": "vector_l2_ops"}
HNSW_INDEX_NAME = "objectpart_vector_hnsw"


def drop_hnsw_index() -> None:
    """Drop the ANN index (before a bulk load: building once afterwards is far faster)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX_NAME}")


def create_hnsw_index(*, maintenance_work_mem: str = "512MB", workers: int | None = None) -> None:
    """(Re)build the HNSW index on ObjectPart.vector with the operator class of ``STUDIO_METRIC``.

    ``maintenance_work_mem`` should hold the whole graph (about 2 KB per 384-d part): a build that
    spills is many times slower. ``workers``: parallel maintenance workers (None: the server's default).
    """
    opclass = HNSW_OPCLASS[settings.STUDIO_METRIC]
    with transaction.atomic(), connection.cursor() as cursor:
        # Rows just written in this transaction may still owe their deferred foreign-key checks,
        # and CREATE INDEX refuses a table with pending trigger events: run the checks now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        # Transaction-local settings: nothing leaks into a pooled connection, even on failure.
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, true)", [maintenance_work_mem])
        if workers is not None:
            cursor.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)", [str(int(workers))])
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {HNSW_INDEX_NAME} ON studio_objectpart "
            f"USING hnsw (vector {opclass}) WITH (m = %s, ef_construction = %s)",
            [settings.STUDIO_HNSW_M, settings.STUDIO_HNSW_EF_CONSTRUCTION],
        )


def cosine_drift(original: np.ndarray, adjusted: np.ndarray) -> float:
    """Largest cosine distance between matching rows of two (parts × D) arrays."""
    a = original / np.maximum(np.linalg.norm(original, axis=1, keepdims=True), 1e-12)
    b = adjusted / np.maximum(np.linalg.norm(adjusted, axis=1, keepdims=True), 1e-12)
    return float(max(0.0, (1.0 - (a * b).sum(axis=1)).max())) if len(a) else 0.0

"""Catalogue writes: upserting and deleting original Objects, writing personalized copies.

Originals are written only here, and only by catalogue calls; improvement runs write
personalized copies through ``write_personalized`` and never touch an original.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from studio import embedding
from studio.models import Object, ObjectPart, PersonalizedObject


@dataclass
class ObjectInput:
    """One object to upsert: its parts are given as vectors, or made from ``text``."""

    object_id: str
    payload: dict = field(default_factory=dict)
    text: str = ""
    vectors: list[list[float]] | None = None  # None: embed ``text``
    add_average: bool = False


@dataclass
class ItemError:
    """Why one item of a batch was not written."""

    index: int
    object_id: str | None
    code: str
    message: str

    def as_dict(self) -> dict:
        """JSON form used by the batch endpoints."""
        return {"index": self.index, "object_id": self.object_id, "code": self.code, "message": self.message}


def _average(vectors: Sequence[Sequence[float]]) -> list[float]:
    mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    if settings.STUDIO_METRIC == "cosine":
        norm = np.linalg.norm(mean)
        if norm > 0:
            mean = mean / norm
    return mean.astype(np.float32).tolist()


def build_parts(items: Sequence[ObjectInput]) -> list[list[tuple[list[float], bool]]]:
    """Resolve every item's parts as ``[(vector, is_average), …]``, embedding text in one batch."""
    chunks: list[str] = []
    owners: list[int] = []
    for position, item in enumerate(items):
        if item.vectors is None:
            for chunk in embedding.split_text(item.text):
                chunks.append(chunk)
                owners.append(position)
    embedded = embedding.embed_texts(chunks) if chunks else np.zeros((0, settings.STUDIO_EMBEDDING_DIM))
    from_text: dict[int, list[list[float]]] = {}
    for owner, vector in zip(owners, embedded, strict=True):
        from_text.setdefault(owner, []).append(vector.tolist())
    result = []
    for position, item in enumerate(items):
        vectors = item.vectors if item.vectors is not None else from_text[position]
        parts = [(list(v), False) for v in vectors]
        # Long text split into several chunks gets an average part too, as do clients that ask for one.
        if len(vectors) > 1 and (item.add_average or item.vectors is None):
            parts.append((_average(vectors), True))
        result.append(parts)
    return result


@transaction.atomic
def upsert_objects(*, items: Sequence[ObjectInput]) -> int:
    """Insert or replace objects and their parts in one transaction; returns how many were written.

    Replacing an original replaces all of its parts, and (``STUDIO_DROP_PERSONALIZED_ON_UPDATE``)
    deletes its personalized copies: the vectors they were learned from are gone.
    """
    if not items:
        return 0
    parts = build_parts(items)
    now = timezone.now()
    rows = Object.objects.bulk_create(
        [Object(object_id=i.object_id, payload=i.payload, text=i.text, created_at=now, updated_at=now) for i in items],
        update_conflicts=True,
        unique_fields=["object_id"],
        update_fields=["payload", "text", "updated_at"],
    )
    pks = [row.pk for row in rows]
    ObjectPart.objects.filter(object_id__in=pks).delete()
    if settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE:
        PersonalizedObject.objects.filter(original_id__in=pks).delete()
    ObjectPart.objects.bulk_create(
        [
            ObjectPart(object_id=pk, index=index, vector=vector, is_average=is_average)
            for pk, object_parts in zip(pks, parts, strict=True)
            for index, (vector, is_average) in enumerate(object_parts)
        ],
        batch_size=1000,
    )
    return len(items)


@transaction.atomic
def delete_object(*, object_id: str) -> dict[str, int] | None:
    """Delete an original with its parts and all personalized copies; None if it does not exist."""
    obj = Object.objects.filter(object_id=object_id).first()
    if obj is None:
        return None
    copies = PersonalizedObject.objects.filter(original=obj).count()
    obj.delete()
    return {"deleted": 1, "personalized_deleted": copies}


def copy_objects(
    *, rows: Iterable[tuple[str, dict, str, list[list[float]]]], batch_size: int = 5000, on_batch=None
) -> int:
    """Bulk-load new objects through COPY (``manage.py load_objects``); existing ids are replaced.

    ``rows`` yields ``(object_id, payload, text, vectors)`` with vectors already resolved.
    Objects land in a temporary table first so that re-loading an id replaces it.
    """
    total = 0
    batch: list[tuple[str, dict, str, list[list[float]]]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            total += _copy_batch(batch)
            if on_batch:
                on_batch(len(batch))
            batch = []
    if batch:
        total += _copy_batch(batch)
        if on_batch:
            on_batch(len(batch))
    return total


@transaction.atomic
def _copy_batch(batch: list[tuple[str, dict, str, list[list[float]]]]) -> int:
    # Later rows with the same id win, as in a sequence of upserts.
    unique = {row[0]: row for row in batch}
    batch = list(unique.values())
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS load_objects_tmp "
            "(object_id text, payload jsonb, text text, vectors text) ON COMMIT DELETE ROWS"
        )
        with cursor.copy("COPY load_objects_tmp (object_id, payload, text, vectors) FROM STDIN") as copy:
            for object_id, payload, text, vectors in batch:
                copy.write_row((object_id, json.dumps(payload), text, json.dumps(vectors)))
        if settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE:
            cursor.execute(
                "DELETE FROM studio_personalizedobject p USING studio_object o, load_objects_tmp t "
                "WHERE p.original_id = o.id AND o.object_id = t.object_id"
            )
        cursor.execute(
            "DELETE FROM studio_objectpart p USING studio_object o, load_objects_tmp t "
            "WHERE p.object_id = o.id AND o.object_id = t.object_id"
        )
        cursor.execute(
            "INSERT INTO studio_object (object_id, payload, text, created_at, updated_at) "
            "SELECT object_id, payload, text, %s, %s FROM load_objects_tmp "
            "ON CONFLICT (object_id) DO UPDATE SET payload = EXCLUDED.payload, text = EXCLUDED.text, "
            "updated_at = EXCLUDED.updated_at",
            [now, now],
        )
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS load_parts_tmp "
            "(object_id text, idx smallint, vector text, is_average boolean) ON COMMIT DELETE ROWS"
        )
        with cursor.copy("COPY load_parts_tmp (object_id, idx, vector, is_average) FROM STDIN") as copy:
            for object_id, _payload, _text, vectors in batch:
                for index, vector in enumerate(vectors):
                    copy.write_row((object_id, index, _vector_literal(vector), False))
        cursor.execute(
            "INSERT INTO studio_objectpart (object_id, index, vector, is_average) "
            "SELECT o.id, t.idx, t.vector::vector, t.is_average FROM load_parts_tmp t "
            "JOIN studio_object o ON o.object_id = t.object_id"
        )
    return len(batch)


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


HNSW_OPCLASS = {"cosine": "vector_cosine_ops", "dot": "vector_ip_ops", "euclid": "vector_l2_ops"}
HNSW_INDEX_NAME = "objectpart_vector_hnsw"


def drop_hnsw_index() -> None:
    """Drop the ANN index (before a bulk load: building once afterwards is far faster)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX_NAME}")


def create_hnsw_index(*, maintenance_work_mem: str = "512MB", workers: int | None = None) -> None:
    """(Re)build the HNSW index on ObjectPart.vector with the operator class of ``STUDIO_METRIC``."""
    opclass = HNSW_OPCLASS[settings.STUDIO_METRIC]
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)", [maintenance_work_mem])
        if workers is not None:
            cursor.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", [str(int(workers))])
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {HNSW_INDEX_NAME} ON studio_objectpart "
            f"USING hnsw (vector {opclass}) WITH (m = %s, ef_construction = %s)",
            [settings.STUDIO_HNSW_M, settings.STUDIO_HNSW_EF_CONSTRUCTION],
        )
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")


def cosine_drift(original: np.ndarray, adjusted: np.ndarray) -> float:
    """Largest cosine distance between matching rows of two (parts × D) arrays."""
    a = original / np.maximum(np.linalg.norm(original, axis=1, keepdims=True), 1e-12)
    b = adjusted / np.maximum(np.linalg.norm(adjusted, axis=1, keepdims=True), 1e-12)
    return float(max(0.0, (1.0 - (a * b).sum(axis=1)).max())) if len(a) else 0.0

"""Helpers shared by the catalogue tests and the commands that fill the catalogue (holds no tests)."""

from __future__ import annotations

import math

import numpy as np
from django.db import connection

from studio.catalogue import services
from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart
from tests.support import unit_vector

DIM = 384


def random_unit(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random unit vectors (count × DIM float32)."""
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_original(object_id: str, *vectors: list[float]) -> Object:
    """An original with one part per vector, or one part along the first axis when none are given."""
    obj = Object.objects.create(object_id=object_id)
    for index, vector in enumerate(vectors or [unit_vector(1.0)]):
        ObjectPart.objects.create(object=obj, index=index, vector=vector)
    return obj


def hnsw_index_definition() -> str | None:
    """The HNSW index's ``CREATE INDEX`` statement, or None when the index is gone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [services.HNSW_INDEX_NAME])
        row = cursor.fetchone()
    return row[0] if row else None


def make_object(object_id: str, *vectors: list[float], payload: dict | None = None) -> Object:
    """An original with one part per vector."""
    obj = Object.objects.create(object_id=object_id, payload=payload or {})
    ObjectPart.objects.bulk_create(ObjectPart(object=obj, index=i, vector=v) for i, v in enumerate(vectors))
    return obj


def make_copy(original: Object, user_id: str, *vectors: list[float]) -> PersonalizedObject:
    """A user's personalized copy of ``original`` with the given parts."""
    copy = PersonalizedObject.objects.create(
        original=original, user_id=user_id, object_id=f"{original.object_id}_{user_id}"
    )
    PersonalizedPart.objects.bulk_create(
        PersonalizedPart(personalized=copy, index=i, vector=v) for i, v in enumerate(vectors)
    )
    return copy


def at_angle(degrees: float) -> list[float]:
    """A unit vector in the first plane at ``degrees`` from the first axis."""
    radians = math.radians(degrees)
    return unit_vector(math.cos(radians), math.sin(radians))

"""Catalogue reads."""

from __future__ import annotations

from django.db import connection

from studio.catalogue.models import Object, ObjectPart, PersonalizedObject


def get_object(*, object_id: str) -> Object | None:
    """The original with this id, or None."""
    return Object.objects.filter(object_id=object_id).first()


def object_parts(*, obj: Object) -> list[ObjectPart]:
    """An original's parts in index order."""
    return list(obj.parts.order_by("index"))


def object_summary(*, obj: Object, with_vectors: bool = False) -> dict:
    """The API representation of an original."""
    data = {
        "object_id": obj.object_id,
        "payload": obj.payload,
        "text": obj.text,
        "created_at": obj.created_at,
        "updated_at": obj.updated_at,
        "parts": obj.parts.count(),
        "personalized_copies": PersonalizedObject.objects.filter(original=obj).count(),
    }
    if with_vectors:
        data["vectors"] = [
            {"index": part.index, "is_average": part.is_average, "vector": [float(x) for x in part.vector]}
            for part in object_parts(obj=obj)
        ]
    return data


_USER_COPY_FOOTPRINT = """
WITH copies AS MATERIALIZED (
    SELECT id, pg_column_size(po.*) AS size FROM studio_personalizedobject po WHERE po.user_id = %s
)
SELECT (SELECT count(*) FROM copies), count(pp.id),
       (SELECT coalesce(sum(size), 0) FROM copies) + coalesce(sum(pg_column_size(pp.*)), 0)
FROM copies c LEFT JOIN studio_personalizedpart pp ON pp.personalized_id = c.id
"""


def user_copy_footprint(*, user_id: str) -> dict[str, int]:
    """What one user's copies occupy: ``{"copies", "parts", "bytes"}`` (row data, halfvec vectors included;
    indexes and page overhead excluded). Bounded by ``IMPROVEMENT_MAX_COPIES_PER_USER``, read through the
    ``user_id`` index: cheap for any user."""
    with connection.cursor() as cursor:
        cursor.execute(_USER_COPY_FOOTPRINT, [user_id])
        copies, parts, size = cursor.fetchone()
    return {"copies": int(copies), "parts": int(parts), "bytes": int(size)}

"""Catalogue reads."""

from __future__ import annotations

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

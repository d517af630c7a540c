"""Validation of catalogue input shared by the API and ``load_objects``."""

from __future__ import annotations

import json

from django.conf import settings

from studio import embedding, services


def parse_object_item(raw: object, index: int) -> services.ObjectInput | services.ItemError:
    """Validate one item of ``POST /objects``; the vectors are checked without DRF's per-float overhead."""
    object_id = raw.get("object_id") if isinstance(raw, dict) else None
    shown_id = object_id if isinstance(object_id, str) else None

    def error(code: str, message: str) -> services.ItemError:
        return services.ItemError(index=index, object_id=shown_id, code=code, message=message)

    if not isinstance(raw, dict):
        return error("invalid", "each object must be a JSON object")
    unknown = sorted(set(raw) - {"object_id", "payload", "text", "vector", "vectors", "average"})
    if unknown:
        return error("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    if not isinstance(object_id, str) or not object_id.strip():
        return error("invalid_object_id", "object_id: a non-empty string is required")
    if len(object_id) > 256:
        return error("invalid_object_id", "object_id: at most 256 characters")
    payload = raw.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return error("invalid_payload", "payload: must be a JSON object")
    if len(json.dumps(payload)) > settings.STUDIO_MAX_PAYLOAD_BYTES:
        return error("payload_too_large", f"payload: at most {settings.STUDIO_MAX_PAYLOAD_BYTES} bytes")
    text = raw.get("text")
    if text is not None and not isinstance(text, str):
        return error("invalid_text", "text: must be a string")
    if text is not None and len(text) > settings.STUDIO_MAX_TEXT_CHARS:
        return error("text_too_long", f"text: at most {settings.STUDIO_MAX_TEXT_CHARS} characters")
    given = [name for name in ("vector", "vectors") if raw.get(name) is not None]
    if len(given) > 1:
        return error("invalid", "send either vector or vectors, not both")
    average = raw.get("average", False)
    if not isinstance(average, bool):
        return error("invalid", "average: must be a boolean")
    vectors: list[list[float]] | None = None
    try:
        if "vector" in given:
            vectors = [embedding.validate_vector(raw["vector"])]
        elif "vectors" in given:
            raw_vectors = raw["vectors"]
            if not isinstance(raw_vectors, list) or not raw_vectors:
                return error("invalid_vector", "vectors: a non-empty list of vectors is required")
            if len(raw_vectors) > settings.STUDIO_MAX_PARTS_PER_OBJECT:
                return error("too_many_parts", f"vectors: at most {settings.STUDIO_MAX_PARTS_PER_OBJECT} parts")
            vectors = [embedding.validate_vector(v) for v in raw_vectors]
    except embedding.InvalidVector as exc:
        return error("invalid_vector", f"{given[0]}: {exc}")
    if vectors is None:
        if not text or not text.strip():
            return error("missing_vector", "one of text, vector or vectors is required")
        if not embedding.embedder_enabled():
            return error("embedder_disabled", "text: STUDIO_EMBEDDER=none, send vector or vectors")
    return services.ObjectInput(
        object_id=object_id, payload=payload, text=text or "", vectors=vectors, add_average=average
    )

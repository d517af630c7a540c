"""Validation of catalogue input shared by the API and ``load_objects``.

Everything PostgreSQL would refuse is caught here, per item, so that one bad item never
fails a whole batch: NUL characters and lone surrogates in text, NaN/Infinity in a JSON
payload, vector entries outside the 32-bit float range.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
from django.conf import settings

from studio.catalogue import embedding, services
from studio.core.vectors import InvalidVector, validate_vector_array

OBJECT_FIELDS = frozenset({"object_id", "payload", "text", "vector", "vectors", "average"})
# "\u0000" as json.dumps writes it (an even number of backslashes before it would make it literal text).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store ``value`` as text, or None."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def payload_problem(payload: dict, *, max_bytes: int) -> tuple[str, str] | None:
    """(code, message) saying why ``payload`` cannot be stored as JSONB, or None."""
    try:
        dumped = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return "invalid_payload", "payload: must not contain NaN or Infinity"
    except (TypeError, RecursionError):
        return "invalid_payload", "payload: must be plain JSON"
    problem = text_problem(dumped)
    if problem is None and _JSON_NUL.search(dumped):
        problem = "must not contain NUL (\\u0000) characters"
    if problem is not None:
        return "invalid_payload", f"payload: strings {problem}"
    if len(dumped.encode("utf-8")) > max_bytes:
        return "payload_too_large", f"payload: at most {max_bytes} bytes of JSON"
    return None


def parse_object_item(raw: object, index: int) -> services.ObjectInput | services.ItemError:
    """Validate one item of ``POST /objects`` (or one line of ``load_objects``).

    Returns an ``ObjectInput`` with vectors as float32 arrays, or an ``ItemError`` naming the field.
    """
    object_id = raw.get("object_id") if isinstance(raw, dict) else None
    shown_id = object_id if isinstance(object_id, str) and text_problem(object_id) is None else None

    def error(code: str, message: str) -> services.ItemError:
        return services.ItemError(index=index, object_id=shown_id, code=code, message=message)

    if not isinstance(raw, dict):
        return error("invalid", "each object must be a JSON object")
    unknown = sorted(set(raw) - OBJECT_FIELDS)
    if unknown:
        return error("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    if not isinstance(object_id, str) or not object_id.strip():
        return error("invalid_object_id", "object_id: a non-empty string is required")
    if len(object_id) > 256:
        return error("invalid_object_id", "object_id: at most 256 characters")
    problem = text_problem(object_id)
    if problem:
        return error("invalid_object_id", f"object_id: {problem}")
    payload = raw.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return error("invalid_payload", "payload: must be a JSON object")
    problem_pair = payload_problem(payload, max_bytes=settings.STUDIO_MAX_PAYLOAD_BYTES)
    if problem_pair:
        return error(*problem_pair)
    text = raw.get("text")
    if text is not None and not isinstance(text, str):
        return error("invalid_text", "text: must be a string")
    if text is not None and len(text) > settings.STUDIO_MAX_TEXT_CHARS:
        return error("text_too_long", f"text: at most {settings.STUDIO_MAX_TEXT_CHARS} characters")
    if text is not None:
        problem = text_problem(text)
        if problem:
            return error("invalid_text", f"text: {problem}")
    given = [name for name in ("vector", "vectors") if raw.get(name) is not None]
    if len(given) > 1:
        return error("invalid", "send either vector or vectors, not both")
    average = raw.get("average", False)
    if not isinstance(average, bool):
        return error("invalid", "average: must be a boolean")
    vectors = None
    if "vector" in given:
        try:
            vectors = [validate_vector_array(raw["vector"])]
        except InvalidVector as exc:
            return error("invalid_vector", f"vector: {exc}")
    elif "vectors" in given:
        raw_vectors = raw["vectors"]
        if not isinstance(raw_vectors, list) or not raw_vectors:
            return error("invalid_vector", "vectors: a non-empty list of vectors is required")
        # One slot stays free for the average part.
        max_given = settings.STUDIO_MAX_PARTS_PER_OBJECT - (1 if average else 0)
        if len(raw_vectors) > max_given:
            return error("too_many_parts", f"vectors: at most {max_given} parts")
        vectors = []
        for position, raw_vector in enumerate(raw_vectors):
            try:
                vectors.append(validate_vector_array(raw_vector))
            except InvalidVector as exc:
                return error("invalid_vector", f"vectors[{position}]: {exc}")
    if vectors is not None and settings.STUDIO_METRIC == "cosine":
        # A zero vector has no direction: its cosine distance is NaN and would break every ranking.
        for position, vector in enumerate(vectors):
            if not np.any(vector):
                name = "vector" if "vector" in given else f"vectors[{position}]"
                return error("zero_vector", f"{name}: a zero vector has no direction (STUDIO_METRIC is cosine)")
    if vectors is None:
        if not text or not text.strip():
            return error("missing_vector", "one of text, vector or vectors is required")
        if not embedding.embedder_enabled():
            return error("embedder_disabled", "text: STUDIO_EMBEDDER=none, send vector or vectors")
        max_words = settings.STUDIO_EMBEDDER_MAX_WORDS
        chunks = math.ceil(len(text.split()) / max_words)
        if chunks > 1 and chunks + 1 > settings.STUDIO_MAX_PARTS_PER_OBJECT:
            limit = (settings.STUDIO_MAX_PARTS_PER_OBJECT - 1) * max_words
            return error("text_too_long", f"text: at most {limit} words (STUDIO_MAX_PARTS_PER_OBJECT parts)")
    return services.ObjectInput(
        object_id=object_id, payload=payload, text=text or "", vectors=vectors, add_average=average
    )

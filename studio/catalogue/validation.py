"""Validation of catalogue input shared by the API and ``load_objects``.

Everything PostgreSQL would refuse is caught here, per item, so that one bad item never
fails a whole batch: NUL characters and lone surrogates in text, NaN/Infinity in a JSON
payload (the shared rules of ``studio.core.validation``), vector entries outside the 32-bit
float range (``studio.core.vectors``).
"""

from __future__ import annotations

import math

import numpy as np
from django.conf import settings

from studio.catalogue import embedding, services
from studio.core.validation import ItemError, id_problem, json_problem, text_problem
from studio.core.vectors import InvalidVector, rank_problem, validate_vector_array

OBJECT_FIELDS = frozenset({"object_id", "payload", "text", "vector", "vectors", "average"})


class _Refused(Exception):
    """An item refused: its error code and a message naming the field."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_object_item(raw: object, index: int) -> services.ObjectInput | ItemError:
    """Validate one item of ``POST /objects`` (or one line of ``load_objects``).

    Returns an ``ObjectInput`` with vectors as float32 arrays, or an ``ItemError`` naming the field.
    """
    object_id = raw.get("object_id") if isinstance(raw, dict) else None
    shown_id = object_id if isinstance(object_id, str) and text_problem(object_id) is None else None
    try:
        return _parse_object(raw)
    except _Refused as refused:
        return ItemError(index=index, code=refused.code, message=refused.message, ids={"object_id": shown_id})


def _parse_object(raw: object) -> services.ObjectInput:
    if not isinstance(raw, dict):
        raise _Refused("invalid", "each object must be a JSON object")
    unknown = sorted(set(raw) - OBJECT_FIELDS)
    if unknown:
        raise _Refused("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    object_id = _object_id(raw.get("object_id"))
    payload = _payload(raw.get("payload", {}))
    text = _text(raw.get("text"))
    given = [name for name in ("vector", "vectors") if raw.get(name) is not None]
    if len(given) > 1:
        raise _Refused("invalid", "send either vector or vectors, not both")
    average = raw.get("average", False)
    if not isinstance(average, bool):
        raise _Refused("invalid", "average: must be a boolean")
    vectors = _vectors(raw, given, average=average)
    if vectors is None:
        _check_embeddable(text)
    return services.ObjectInput(
        object_id=object_id, payload=payload, text=text or "", vectors=vectors, add_average=average
    )


def _object_id(object_id: object) -> str:
    problem = id_problem(object_id)
    if problem:
        raise _Refused("invalid_object_id", f"object_id: {problem[1]}")
    return object_id


def _payload(payload: object) -> dict:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise _Refused("invalid_payload", "payload: must be a JSON object")
    problem = json_problem(payload, max_bytes=settings.STUDIO_MAX_PAYLOAD_BYTES)
    if problem:
        kind, message = problem
        raise _Refused("payload_too_large" if kind == "too_large" else "invalid_payload", f"payload: {message}")
    return payload


def _text(text: object) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _Refused("invalid_text", "text: must be a string")
    if len(text) > settings.STUDIO_MAX_TEXT_CHARS:
        raise _Refused("text_too_long", f"text: at most {settings.STUDIO_MAX_TEXT_CHARS} characters")
    problem = text_problem(text)
    if problem:
        raise _Refused("invalid_text", f"text: {problem}")
    return text


def _vectors(raw: dict, given: list[str], *, average: bool) -> list[np.ndarray] | None:
    """The item's parts as float32 arrays; None when it has none (its text is embedded instead)."""
    if "vector" in given:
        named = [("vector", raw["vector"])]
    elif "vectors" in given:
        raw_vectors = raw["vectors"]
        if not isinstance(raw_vectors, list) or not raw_vectors:
            raise _Refused("invalid_vector", "vectors: a non-empty list of vectors is required")
        max_given = settings.STUDIO_MAX_PARTS_PER_OBJECT - (1 if average else 0)  # one slot for the average
        if len(raw_vectors) > max_given:
            raise _Refused("too_many_parts", f"vectors: at most {max_given} parts")
        named = [(f"vectors[{position}]", vector) for position, vector in enumerate(raw_vectors)]
    else:
        return None
    vectors = []
    for name, raw_vector in named:
        try:
            vectors.append(validate_vector_array(raw_vector))
        except InvalidVector as exc:
            raise _Refused("invalid_vector", f"{name}: {exc}") from None
    # What pgvector could not rank (zero or overflowing in float32) would break every ranking it enters.
    for (name, _), vector in zip(named, vectors, strict=True):
        _check_rankable(vector, name)
    if average and len(vectors) > 1:
        _check_rankable(np.mean(np.asarray(vectors, dtype=np.float64), axis=0), "average")
    return vectors


def _check_rankable(vector: np.ndarray, name: str) -> None:
    problem = rank_problem(vector, metric=settings.STUDIO_METRIC)
    if problem:
        code, message = problem
        subject = "the mean of the parts" if name == "average" else "the vector"
        raise _Refused(code, f"{name}: {subject} {message}")


def _check_embeddable(text: str | None) -> None:
    """An item without vectors needs text the embedder can take in at most STUDIO_MAX_PARTS_PER_OBJECT parts."""
    if not text or not text.strip():
        raise _Refused("missing_vector", "one of text, vector or vectors is required")
    if not embedding.embedder_enabled():
        raise _Refused("embedder_disabled", "text: STUDIO_EMBEDDER=none, send vector or vectors")
    max_words = settings.STUDIO_EMBEDDER_MAX_WORDS
    chunks = math.ceil(len(text.split()) / max_words)
    if chunks > 1 and chunks + 1 > settings.STUDIO_MAX_PARTS_PER_OBJECT:
        limit = (settings.STUDIO_MAX_PARTS_PER_OBJECT - 1) * max_words
        raise _Refused("text_too_long", f"text: at most {limit} words (STUDIO_MAX_PARTS_PER_OBJECT parts)")

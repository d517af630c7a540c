"""Vector validation shared by every app (pure: no model, no database)."""

from __future__ import annotations

import math

from django.conf import settings


class InvalidVector(ValueError):
    """A vector of the wrong dimension, or with NaN/Inf or non-numeric entries."""


def validate_vector(value: object, *, dim: int | None = None) -> list[float]:
    """Return ``value`` as a list of floats, or raise InvalidVector naming what is wrong."""
    dim = dim or settings.STUDIO_EMBEDDING_DIM
    if not isinstance(value, (list, tuple)):
        raise InvalidVector("must be a list of numbers")
    if len(value) != dim:
        raise InvalidVector(f"must have {dim} dimensions, got {len(value)}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise InvalidVector("must contain only numbers")
        number = float(item)
        if not math.isfinite(number):
            raise InvalidVector("must not contain NaN or Infinity")
        out.append(number)
    return out

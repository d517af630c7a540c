"""Serializer building blocks shared by every app's API."""

from __future__ import annotations

from rest_framework import serializers

from studio.core.errors import ApiError


def batch_items(data: object, *, key: str, limit: int) -> list:
    """The item list of a batch request ``{key: [...]}``, checked without touching the items.

    Items are validated one by one by the caller, so that a bad item is reported per item
    and never costs the rest of the batch.
    """
    if not isinstance(data, dict):
        raise ApiError(
            code="invalid", message="The body must be a JSON object.", fields={"body": ["Expected an object."]}
        )
    unknown = sorted(set(data) - {key})
    if unknown:
        raise ApiError(
            code="invalid",
            message=f"{unknown[0]}: Unknown field.",
            fields={name: ["Unknown field."] for name in unknown},
        )
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise ApiError(
            code="invalid",
            message=f"{key}: a non-empty list is required.",
            fields={key: ["A non-empty list is required."]},
        )
    if len(items) > limit:
        message = f"at most {limit} items per request, got {len(items)}"
        raise ApiError(code="too_many_items", message=f"{key}: {message}", fields={key: [message]}, status_code=413)
    return items


class StrictSerializer(serializers.Serializer):
    """A serializer that rejects fields it does not declare, naming them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ErrorDetailSerializer(serializers.Serializer):
    """The inside of an error response."""

    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    """Every error response: ``{"error": {"code", "message", "fields"}}``."""

    error = ErrorDetailSerializer()


# The responses every authenticated operation documents (missing or bad key, missing scope).
AUTH_ERRORS = {401: ErrorSerializer, 403: ErrorSerializer}

_TRUTHY = frozenset({"1", "true", "yes"})


def query_flag(request, name: str) -> bool:
    """A boolean query parameter: ``1``, ``true`` or ``yes`` (any case) mean yes; anything else, no."""
    return request.query_params.get(name, "").lower() in _TRUTHY

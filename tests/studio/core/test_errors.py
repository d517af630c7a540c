"""studio.core.errors: the API exception handler covers every DRF exception and the Django errors."""

from __future__ import annotations

from django.db import DataError, IntegrityError


def test_exception_handler_covers_every_drf_exception_and_django_errors():
    from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
    from django.core.exceptions import RequestDataTooBig
    from django.core.exceptions import ValidationError as DjangoValidationError
    from django.db import OperationalError
    from django.http import Http404
    from rest_framework import exceptions

    from studio.core.errors import ApiError, api_exception_handler

    cases = [
        (exceptions.ParseError(), 400, "parse_error"),
        (exceptions.ValidationError({"limit": ["Too big."]}), 400, "invalid"),
        (exceptions.ValidationError(["Bad."]), 400, "invalid"),
        (exceptions.AuthenticationFailed(), 401, "authentication_failed"),
        (exceptions.NotAuthenticated(), 401, "not_authenticated"),
        (exceptions.PermissionDenied(), 403, "permission_denied"),
        (exceptions.NotFound(), 404, "not_found"),
        (exceptions.MethodNotAllowed("PUT"), 405, "method_not_allowed"),
        (exceptions.NotAcceptable(), 406, "not_acceptable"),
        (exceptions.UnsupportedMediaType("text/plain"), 415, "unsupported_media_type"),
        (exceptions.Throttled(wait=3), 429, "throttled"),
        (exceptions.APIException(), 500, "error"),
        (ApiError(code="too_many_items", message="m", status_code=413, fields={"x": ["y"]}), 413, "too_many_items"),
        (Http404(), 404, "not_found"),
        (DjangoPermissionDenied(), 403, "permission_denied"),
        (DjangoValidationError({"name": ["Required."]}), 400, "invalid"),
        (DjangoValidationError("Bad."), 400, "invalid"),
        (RequestDataTooBig(), 413, "payload_too_large"),
        (OperationalError("down"), 503, "database_unavailable"),
        (IntegrityError("dup"), 409, "conflict"),
        (DataError("range"), 400, "invalid"),
        (RecursionError(), 400, "parse_error"),
    ]
    for exc, status, code in cases:
        response = api_exception_handler(exc, {"request": None, "view": None})
        assert response is not None, exc
        assert response.status_code == status, (exc, response.status_code)
        assert set(response.data) == {"error"}, exc
        assert response.data["error"]["code"] == code, (exc, response.data)
        assert isinstance(response.data["error"]["message"], str) and response.data["error"]["message"]
        assert isinstance(response.data["error"]["fields"], dict)
    throttled = api_exception_handler(exceptions.Throttled(wait=3), {"request": None, "view": None})
    assert throttled["Retry-After"] == "3"
    invalid = api_exception_handler(exceptions.ValidationError({"limit": ["Too big."]}), {})
    assert invalid.data["error"]["fields"] == {"limit": ["Too big."]}
    assert invalid.data["error"]["message"] == "limit: Too big."
    assert api_exception_handler(ValueError("not ours"), {}) is None  # left to the middleware: JSON 500

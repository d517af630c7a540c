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


def test_domain_errors_carry_their_code_status_and_field_to_http():
    from clickstream.services import SessionConflict
    from clickstream.validation import SessionInvalid
    from improvement.services import BrokerUnavailable
    from studio.catalogue.search import EmbedderDisabled
    from studio.core.errors import api_exception_handler

    cases = [
        (SessionInvalid("user_id", "a non-empty string is required"), 400, "invalid", "user_id"),
        (SessionConflict("s1"), 409, "session_conflict", "session_id"),
        (EmbedderDisabled(), 400, "embedder_disabled", "query"),
        (BrokerUnavailable("connection refused on redis://10.0.0.7"), 503, "broker_unavailable", None),
    ]
    for exc, status, code, field in cases:
        response = api_exception_handler(exc, {})
        error = response.data["error"]
        assert (response.status_code, error["code"]) == (status, code), exc
        assert error["fields"] == ({field: [exc.message]} if field else {})
        assert error["message"] == (f"{field}: {exc.message}" if field else exc.message)
    broker_message = api_exception_handler(cases[3][0], {}).data["error"]["message"]
    assert "10.0.0.7" not in broker_message  # the broker's own words stay inside (admin, log)


def test_a_renamed_domain_error_keeps_its_type():
    from clickstream.validation import SessionInvalid

    renamed = SessionInvalid("search_query", "too long", "too_long").renamed({"search_query": "query"})
    assert isinstance(renamed, SessionInvalid)
    assert (renamed.field, renamed.code, str(renamed)) == ("query", "too_long", "query: too long")

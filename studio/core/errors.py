"""One JSON error shape for the whole API: ``{"error": {"code", "message", "fields"}}``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A refusal by a service, carrying how the API reports it: ``code``, HTTP ``status_code`` and the
    ``field`` it names (if any). Services raise it; ``api_exception_handler`` maps it to HTTP, once."""

    code = "invalid"
    status_code = 400

    def __init__(
        self, message: str, *, field: str | None = None, code: str | None = None, status_code: int | None = None
    ):
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field
        self.code = code or self.code
        self.status_code = status_code or self.status_code

    def renamed(self, names: dict[str, str]) -> DomainError:
        """The same error naming ``names[field]`` instead (a field that an endpoint calls otherwise)."""
        if self.field not in names:
            return self
        renamed = self.__class__.__new__(self.__class__)  # same type: callers' except clauses still match
        renamed.__dict__.update(self.__dict__, field=names[self.field])
        renamed.args = (f"{renamed.field}: {self.message}",)
        return renamed


class ApiError(exceptions.APIException):
    """An error with an explicit code, message, HTTP status and optional per-field details."""

    def __init__(self, *, code: str, message: str, status_code: int = 400, fields: dict | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.fields = fields or {}


def error_body(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    """The body of every error response."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [str(item) for item in detail]
        return [_flatten(item) for item in detail]
    return str(detail)


def _first_message(fields: dict) -> str:
    for name, value in fields.items():
        while isinstance(value, (list, dict)) and value:
            if isinstance(value, dict):
                name, value = f"{name}.{next(iter(value))}", next(iter(value.values()))
            else:
                value = next((v for v in value if v), value[0])
        return f"{name}: {value}"
    return "Invalid input."


# Django and database errors that are the client's or the moment's, not a bug: (code, message, status).
_PLAIN_ERRORS: tuple[tuple[type[BaseException], str, str, int], ...] = (
    (IntegrityError, "conflict", "A concurrent change conflicted; retry.", 409),  # a concurrent write won
    (DataError, "invalid", "A value is out of range for the database.", 400),
    (RecursionError, "parse_error", "JSON parse error - nested too deeply.", 400),  # deeper than the parser recurses
    (RequestDataTooBig, "payload_too_large", "The request body is too large.", 413),
    (SuspiciousOperation, "bad_request", "The request was refused as malformed.", 400),
)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler producing the studio error shape: the one place errors become HTTP.

    Handles domain errors (``DomainError``: code, status and field of their own), every DRF
    ``APIException`` (400 parse/validation, 401, 403, 404, 405, 406, 413 via ``ApiError``, 415, 429
    with ``Retry-After``), Django's 404/403/validation/oversize errors, database outages (503) and
    constraint races (409). Anything else is left to ``ApiErrorMiddleware``, which logs it and
    answers a JSON 500.
    """
    response = _studio_error(exc)
    if response is not None:
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is not None:
        response.data = _drf_error_body(exc)
    return response


def _studio_error(exc: Exception) -> Response | None:
    """The response for errors DRF does not know, or None."""
    if isinstance(exc, DomainError):
        fields = {exc.field: [exc.message]} if exc.field else {}
        return Response(error_body(exc.code, str(exc), fields), status=exc.status_code)
    if isinstance(exc, ApiError):
        return Response(error_body(exc.error_code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, (OperationalError, InterfaceError)):
        body = error_body("database_unavailable", "The database is unavailable; retry later.")
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})
    if isinstance(exc, DjangoValidationError):
        messages = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        fields = {name: [str(m) for m in value] for name, value in messages.items()}
        return Response(error_body("invalid", _first_message(fields), fields), status=400)
    for kind, code, message, status_code in _PLAIN_ERRORS:
        if isinstance(exc, kind):
            return Response(error_body(code, message), status=status_code)
    return None


def _drf_error_body(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = _flatten(detail)
        return error_body("invalid", _first_message(fields), fields)
    codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    return error_body(codes if isinstance(codes, str) else "error", str(getattr(exc, "detail", exc)))


def json_error(code: str, message: str, status_code: int, **headers: str) -> JsonResponse:
    """A plain Django JSON error response (for middleware, outside DRF)."""
    response = JsonResponse(error_body(code, message), status=status_code)
    for name, value in headers.items():
        response[name] = value
    return response

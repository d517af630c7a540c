"""Middleware that keeps API failures JSON: chunked bodies (411), oversize bodies (413), database outages (503),
crashes (500)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError

from studio.core.errors import json_error

logger = logging.getLogger(__name__)

_HTML_ERRORS = {
    400: ("bad_request", "The request was refused as malformed."),
    403: ("forbidden", "Forbidden."),
    404: ("not_found", "No such API endpoint."),
    405: ("method_not_allowed", "Method not allowed."),
    500: ("internal_error", "Internal error."),
}


class ApiErrorMiddleware:
    """For ``/api/`` paths: refuse bodies over ``STUDIO_MAX_BODY_BYTES`` before reading them,
    answer 503 while the database is unreachable, and never return an HTML error page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            # Django reads a body without Content-Length as empty (and past the size limit's check):
            # refuse it rather than act on a request whose body was silently dropped. Any path.
            return json_error(
                "length_required", "Send the body with a Content-Length (chunked transfer encoding is refused).", 411
            )
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return json_error("invalid_content_length", "Content-Length is not a number.", 400)
            if length > settings.STUDIO_MAX_BODY_BYTES:
                return json_error(
                    "payload_too_large",
                    f"Request body is {length} bytes; the limit is {settings.STUDIO_MAX_BODY_BYTES}.",
                    413,
                )
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and response.get("Content-Type", "").startswith("text/html")
        ):
            # Django's own pages (unknown URL, CSRF failure, bad Host) are HTML: API clients get JSON.
            code, message = _HTML_ERRORS.get(response.status_code, ("error", "The request failed."))
            return json_error(code, message, response.status_code)
        return response

    def process_exception(self, request, exception):
        """Turn what escaped the views into JSON for API clients."""
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, (OperationalError, InterfaceError)):
            return json_error(
                "database_unavailable", "The database is unavailable; retry later.", 503, **{"Retry-After": "5"}
            )
        logger.exception("unhandled error on %s", request.path)
        return json_error("internal_error", "Internal error.", 500)

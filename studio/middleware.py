"""Middleware that keeps API failures JSON: oversize bodies (413), database outages (503), crashes (500)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError

from studio.errors import json_error

logger = logging.getLogger(__name__)


class ApiErrorMiddleware:
    """For ``/api/`` paths: refuse bodies over ``STUDIO_MAX_BODY_BYTES`` before reading them,
    answer 503 while the database is unreachable, and never return an HTML error page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
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
        return self.get_response(request)

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

"""A gunicorn worker that answers its own protocol errors in studio's JSON error shape.

gunicorn refuses some requests before Django sees them (a header over ``limit_request_field_size``:
431; a request line over ``limit_request_line``: 414; a malformed ``Content-Length`` or request
line: 400) and writes an HTML page for them. This worker writes ``{"error": {"code", "message",
"fields"}}`` instead, so an API client gets the same shape for every error. What gunicorn cannot
answer at all (a connection it drops, a TLS failure) stays as it is.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``'s signature, writing the studio error shape."""
    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps({"error": {"code": _CODES.get(status_int, "error"), "message": message, "fields": {}}})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body.encode())


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's threaded worker (``--threads``), with JSON protocol errors."""

    def init_process(self) -> None:
        util.write_error = write_json_error  # in this worker process only (after the fork)
        super().init_process()

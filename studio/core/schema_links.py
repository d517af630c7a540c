"""OpenAPI links: how a client (and Schemathesis' stateful tests) goes from one response to the next call.

drf-spectacular has no per-response links, so this postprocessing hook adds them to the generated schema:
a registered session leads to its events, its detail, its irrelevant mark and forgetting its user. It also
says what the clickstream's parsers enforce and a serializer cannot declare: their bodies take no other field.
"""

from __future__ import annotations

SESSION = "/api/v1/clickstream/sessions/{session_id}"
_BY_BODY_SESSION = {"session_id": "$response.body#/session_id"}
_BY_PATH_SESSION = {"session_id": "$request.path.session_id"}
_BY_BODY_USER = {"user_id": "$response.body#/user_id"}

# (path, method, status) → {link name: (target operationId, parameters)}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, dict]]] = {
    ("/api/v1/clickstream/sessions", "post", "201"): {
        "RecordEvents": ("clickstream_sessions_events_create", _BY_BODY_SESSION),
        "ReadSession": ("clickstream_sessions_retrieve", _BY_BODY_SESSION),
        "MarkIrrelevant": ("clickstream_sessions_irrelevant_create", _BY_BODY_SESSION),
        "ForgetUser": ("users_destroy", _BY_BODY_USER),
    },
    (SESSION + "/events", "post", "200"): {"ReadSession": ("clickstream_sessions_retrieve", _BY_PATH_SESSION)},
    (SESSION, "get", "200"): {"ForgetUser": ("users_destroy", _BY_BODY_USER)},
}


# Request bodies whose parser refuses any field it does not know (``unknown_field``; clickstream.validation).
CLOSED_REQUESTS = (
    "ClickstreamSessionBatchRequest",
    "ClickstreamSessionEventsRequest",
    "SessionInputRequest",
    "ShownResultInputRequest",
    "SessionEventInputRequest",
)


def add_links(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: put ``LINKS`` on the responses they start from, and close
    ``CLOSED_REQUESTS`` (``additionalProperties: false``)."""
    components = result.get("components", {}).get("schemas", {})
    for name in CLOSED_REQUESTS:
        if name in components:
            components[name]["additionalProperties"] = False
    for (path, method, status), links in LINKS.items():
        response = result.get("paths", {}).get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue  # an operation this schema does not serve
        response["links"] = {
            name: {"operationId": operation_id, "parameters": dict(parameters)}
            for name, (operation_id, parameters) in links.items()
        }
    return result

"""Validation of clickstream input, in plain Python.

Ingestion is the hot path (thousands of events per second), so items are checked here with
plain functions rather than DRF per-field serializers; the serializers in ``clickstream.api``
describe the envelope and the OpenAPI schema. Every check names the field it refuses.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings

from studio.core.errors import DomainError
from studio.core.validation import MAX_ID_CHARS, ItemError, echo, id_problem, json_problem, text_problem
from studio.core.vectors import InvalidVector, rank_problem, validate_vector

MAX_EVENT_TYPE_CHARS = 64
RESERVED_SESSION_IDS = frozenset({"batch"})  # would shadow ``/clickstream/sessions/batch``

SESSION_FIELDS = frozenset(
    {"session_id", "user_id", "search_query", "query_vector", "search_results", "search_meta", "created_at"}
)
RESULT_FIELDS = frozenset({"object_id", "score", "meta"})
EVENT_FIELDS = frozenset({"session_id", "event_id", "object_id", "event_type", "created_at", "meta"})

_canonical = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode


class SessionInvalid(DomainError, ValueError):
    """A session (or one of its fields) that cannot be registered; ``field`` names the culprit (HTTP 400)."""

    def __init__(self, field_name: str, message: str, code: str = "invalid"):
        super().__init__(message, field=field_name, code=code)


@dataclass
class ShownResultInput:
    """One result shown in a session, in the order of the list it belongs to."""

    object_id: str
    score: float | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class SessionInput:
    """A validated session, ready to be stored. ``created_at`` None means "server time"."""

    session_id: str
    user_id: str | None
    search_query: str
    query_vector: list[float] | None
    results: list[ShownResultInput]
    search_meta: dict
    created_at: datetime | None
    fingerprint: str


@dataclass
class EventInput:
    """A validated event of request item ``index``; ``created_at`` None means "server time"."""

    index: int
    session_id: str
    event_id: str
    object_id: str
    event_type: str
    created_at: datetime | None
    meta: dict


def _time_window(now: datetime) -> tuple[datetime, datetime]:
    return (
        now - timedelta(seconds=settings.CLICKSTREAM_MAX_PAST),
        now + timedelta(seconds=settings.CLICKSTREAM_MAX_FUTURE),
    )


def parse_timestamp(value: object, *, field_name: str, now: datetime) -> datetime:
    """An aware UTC datetime from ISO 8601 text or epoch seconds, inside the accepted window around ``now``.

    Naive ISO times are taken as UTC. Raises SessionInvalid naming ``field_name``.
    """
    moment = _moment(value, field_name)
    earliest, latest = _time_window(now)
    if moment < earliest or moment > latest:
        raise SessionInvalid(
            field_name,
            f"{moment.isoformat()} is outside the accepted window "
            f"[{earliest.isoformat(timespec='seconds')}, {latest.isoformat(timespec='seconds')}] "
            "(CLICKSTREAM_MAX_PAST / CLICKSTREAM_MAX_FUTURE)",
            "timestamp_out_of_window",
        )
    return moment.astimezone(UTC)


def _moment(value: object, field_name: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return _from_epoch(float(value), field_name)
        except OverflowError:
            raise SessionInvalid(field_name, "epoch seconds out of range", "invalid_timestamp") from None
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > 64:
        raise SessionInvalid(field_name, "must be an ISO 8601 time or epoch seconds", "invalid_timestamp")
    try:
        return _from_epoch(float(text), field_name)
    except ValueError:  # not a number (or not a usable one): ISO 8601 then
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            message = f"not an ISO 8601 time or epoch seconds: {text!r}"
            raise SessionInvalid(field_name, message, "invalid_timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _from_epoch(number: float, field_name: str) -> datetime:
    if not math.isfinite(number):
        raise SessionInvalid(field_name, "must be a finite number of epoch seconds", "invalid_timestamp")
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise SessionInvalid(field_name, "epoch seconds out of range", "invalid_timestamp") from None


def _check_text(value: str, field_name: str) -> str:
    """Refuse what PostgreSQL text cannot hold: NUL characters and lone surrogates."""
    problem = text_problem(value)
    if problem:
        raise SessionInvalid(field_name, problem)
    return value


def _plain_identifier(value: object) -> bool:
    """The common case of a valid identifier, checked without formatting a field name."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_ID_CHARS
        and value.isascii()
        and "\x00" not in value
        and not value[0].isspace()
        and not value[-1].isspace()
    )


def _identifier(value: object, field_name: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    problem = id_problem(value)
    if problem:
        code, message = problem
        raise SessionInvalid(field_name, message, code)
    return value


def _json_object(value: object, field_name: str) -> dict:
    """A JSON object, refused over ``STUDIO_MAX_JSON_FIELD_BYTES`` (UTF-8) or with what PostgreSQL's jsonb refuses."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SessionInvalid(field_name, "must be a JSON object")
    if not value:
        return value
    problem = json_problem(value, max_bytes=settings.STUDIO_MAX_JSON_FIELD_BYTES)
    if problem:
        kind, message = problem
        raise SessionInvalid(field_name, message, "json_too_large" if kind == "too_large" else "invalid")
    return value


def session_fingerprint(
    *,
    user_id: str | None,
    search_query: str,
    query_vector: list[float] | None,
    results: list[ShownResultInput],
    search_meta: dict,
    created_at: datetime | None,
) -> str:
    """sha256 of the registered content in canonical JSON: equal content, equal fingerprint.

    ``created_at`` enters as sent (None when the server chose the time), so a replay that
    omits it again is recognised as identical.
    """
    content = {
        "user_id": user_id,
        "search_query": search_query,
        "query_vector": query_vector,
        "results": [[r.object_id, r.score, r.meta] for r in results],
        "search_meta": search_meta,
        "created_at": created_at.isoformat() if created_at else None,
    }
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


def validate_session(
    *,
    session_id: object,
    user_id: object,
    search_query: object,
    query_vector: object,
    results: object,
    search_meta: object,
    created_at: object,
    now: datetime,
) -> SessionInput:
    """Check every field of a session; raises SessionInvalid naming the first bad one.

    ``results`` items may be ShownResultInput or raw JSON objects ``{object_id, score?, meta?}``.
    """
    session_id = _session_id(session_id)
    user_id = _identifier(user_id, "user_id", required=False)
    search_query = _text(search_query, "search_query", max_chars=settings.STUDIO_MAX_TEXT_CHARS, default="")
    vector = None if query_vector is None else _query_vector(query_vector)
    meta = _json_object(search_meta, "search_meta")
    shown = _validate_results(results)
    moment = None if created_at is None else parse_timestamp(created_at, field_name="created_at", now=now)
    if vector is None and not search_query.strip():  # every field is valid, but together they teach nothing
        raise SessionInvalid("search_query", "required (the query text), unless query_vector is given", "missing_query")
    fingerprint = session_fingerprint(
        user_id=user_id,
        search_query=search_query,
        query_vector=vector,
        results=shown,
        search_meta=meta,
        created_at=moment,
    )
    return SessionInput(
        session_id=session_id,
        user_id=user_id,
        search_query=search_query,
        query_vector=vector,
        results=shown,
        search_meta=meta,
        created_at=moment,
        fingerprint=fingerprint,
    )


def _session_id(value: object) -> str:
    session_id = _identifier(value, "session_id")
    if "/" in session_id:
        raise SessionInvalid("session_id", "must not contain '/'")
    if session_id in RESERVED_SESSION_IDS:
        raise SessionInvalid("session_id", f"'{session_id}' is reserved")
    return session_id


def _text(value: object, field_name: str, *, max_chars: int, default: str) -> str:
    """A string field (None: ``default``) of at most ``max_chars`` characters that PostgreSQL can store."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise SessionInvalid(field_name, "must be a string")
    if len(value) > max_chars:
        raise SessionInvalid(field_name, f"at most {max_chars} characters", "too_long")
    return _check_text(value, field_name)


def _query_vector(value: object) -> list[float]:
    try:
        vector = validate_vector(value)
    except InvalidVector as exc:
        raise SessionInvalid("query_vector", str(exc), "invalid_vector") from None
    except OverflowError:  # an integer beyond float range
        raise SessionInvalid("query_vector", "must contain only finite numbers", "invalid_vector") from None
    problem = rank_problem(vector, metric=settings.STUDIO_METRIC)
    if problem:  # a session that could never teach (search refuses the same vector)
        raise SessionInvalid("query_vector", f"the vector {problem[1]}", problem[0])
    return vector


def _finite_number(value: object, field_name: str) -> float:
    """A finite float from a JSON number (an integer too large for a float is refused, not a crash)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SessionInvalid(field_name, "must be a finite number or null")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise SessionInvalid(field_name, "must be a finite number or null")
    return number


def _validate_results(results: object) -> list[ShownResultInput]:
    if results is None:
        results = []
    if not isinstance(results, list):
        raise SessionInvalid("search_results", "must be a list of results in shown order")
    limit = settings.CLICKSTREAM_MAX_RESULTS_PER_SESSION
    if len(results) > limit:
        raise SessionInvalid("search_results", f"at most {limit} results, got {len(results)}", "too_many_results")
    shown: list[ShownResultInput] = []
    positions: dict[str, int] = {}
    for position, item in enumerate(results):
        # Hot loop (a batch holds thousands of results): field names are formatted only on error.
        if type(item) is dict:
            if not item.keys() <= RESULT_FIELDS:
                unknown = min(set(item) - RESULT_FIELDS)
                raise SessionInvalid(f"search_results[{position}].{unknown}", "unknown field", "unknown_field")
            object_id, score, meta = item.get("object_id"), item.get("score"), item.get("meta")
        elif isinstance(item, ShownResultInput):
            object_id, score, meta = item.object_id, item.score, item.meta
        else:
            raise SessionInvalid(f"search_results[{position}]", "must be an object {object_id, score?, meta?}")
        if not _plain_identifier(object_id):
            object_id = _identifier(object_id, f"search_results[{position}].object_id")
        if object_id in positions:
            raise SessionInvalid(
                f"search_results[{position}].object_id",
                f"'{object_id}' was already shown at position {positions[object_id]}",
                "duplicate_object_id",
            )
        positions[object_id] = position
        if score is not None and (type(score) is not float or not math.isfinite(score)):
            score = _finite_number(score, f"search_results[{position}].score")
        if meta is None:
            meta = {}
        elif type(meta) is not dict or meta:
            meta = _json_object(meta, f"search_results[{position}].meta")
        shown.append(ShownResultInput(object_id=object_id, score=score, meta=meta))
    return shown


def parse_session_item(raw: object, *, now: datetime) -> SessionInput:
    """Validate one session of the REST API (``search_results`` holds the shown results)."""
    if not isinstance(raw, dict):
        raise SessionInvalid("session", "each session must be a JSON object")
    unknown = set(raw) - SESSION_FIELDS
    if unknown:
        raise SessionInvalid(min(unknown), "unknown field", "unknown_field")
    if "session_id" not in raw:
        # Required over HTTP: a retried request without it would create a second session.
        raise SessionInvalid("session_id", "is required (it makes retries safe)", "required")
    if "search_results" not in raw:
        raise SessionInvalid("search_results", "is required (the results in shown order)", "required")
    return validate_session(
        session_id=raw.get("session_id"),
        user_id=raw.get("user_id"),
        search_query=raw.get("search_query"),
        query_vector=raw.get("query_vector"),
        results=raw.get("search_results"),
        search_meta=raw.get("search_meta"),
        created_at=raw.get("created_at"),
        now=now,
    )


def parse_event_item(raw: object, *, index: int, now: datetime, session_id: str | None) -> EventInput | ItemError:
    """Validate one event. ``session_id`` is the session of a per-session endpoint (None: read it from the item)."""
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    shown_id = echo(event_id)
    item_session = raw.get("session_id") if isinstance(raw, dict) else None
    shown_session = session_id or echo(item_session)
    try:
        return _event(raw, index=index, now=now, session_id=session_id)
    except SessionInvalid as exc:
        ids = {"event_id": shown_id, "session_id": shown_session}
        return ItemError(index=index, code=exc.code, message=str(exc), ids=ids)


def _event(raw: object, *, index: int, now: datetime, session_id: str | None) -> EventInput:
    if not isinstance(raw, dict):
        raise SessionInvalid("event", "each event must be a JSON object")
    unknown = set(raw) - EVENT_FIELDS
    if unknown:
        raise SessionInvalid(min(unknown), "unknown field", "unknown_field")
    item_session = raw.get("session_id")
    if session_id is None:
        session_id = _identifier(item_session, "session_id")
    elif item_session is not None and item_session != session_id:
        raise SessionInvalid("session_id", "differs from the session in the URL", "session_mismatch")
    created = raw.get("created_at")
    return EventInput(
        index=index,
        session_id=session_id,
        event_id=_identifier(raw.get("event_id"), "event_id"),
        object_id=_identifier(raw.get("object_id"), "object_id"),
        event_type=_event_type(raw.get("event_type", "click")),
        created_at=None if created is None else parse_timestamp(created, field_name="created_at", now=now),
        meta=_json_object(raw.get("meta"), "meta"),
    )


def _event_type(value: object) -> str:
    if value is None:
        return "click"
    if not isinstance(value, str) or not value.strip():
        raise SessionInvalid("event_type", "a non-empty string is required")
    return _text(value, "event_type", max_chars=MAX_EVENT_TYPE_CHARS, default="click")

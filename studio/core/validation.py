"""The rules every input passes before PostgreSQL sees it, shared by the catalogue and the clickstream.

PostgreSQL refuses NUL characters and lone surrogates in ``text`` and ``jsonb`` (and NaN/Infinity
in JSON); catching them here, per item, means one bad item never fails a whole batch and never
becomes a 500. ``ItemError`` is how a batch endpoint reports the items it did not store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# "\u0000" as json.dumps writes it (an even number of backslashes before it would make it literal text).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass
class ItemError:
    """Why one item of a batch was not stored: its index in the request, the ids that name it
    (``object_id``, or ``session_id`` and ``event_id``), a code and a message naming the field."""

    index: int
    code: str
    message: str
    ids: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The JSON form in batch responses: ``{"index", <ids>, "code", "message"}``."""
        return {"index": self.index, **self.ids, "code": self.code, "message": self.message}


def echo(value: object) -> str | None:
    """A client string safe to echo in a JSON response (lone surrogates escaped); None for non-strings."""
    if not isinstance(value, str):
        return None
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode()


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store ``value`` as text, or None."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogates)"
    return None


MAX_ID_CHARS = 256


def id_problem(value: object) -> tuple[str, str] | None:
    """``(code, message)`` saying why ``value`` is not an id (object, session, user, event), or None.

    One rule for ids everywhere: a non-empty string of at most ``MAX_ID_CHARS`` characters that
    PostgreSQL can store, taken verbatim — surrounding whitespace is refused, never trimmed, so the
    id a client sends is the id every endpoint and every join sees.
    """
    if not isinstance(value, str) or not value.strip():
        return "invalid", "a non-empty string is required"
    if len(value) > MAX_ID_CHARS:
        return "too_long", f"at most {MAX_ID_CHARS} characters"
    if value != value.strip():
        return "invalid", "must not start or end with whitespace (ids are taken verbatim)"
    problem = text_problem(value)
    return ("invalid", problem) if problem else None


def json_problem(value: object, *, max_bytes: int) -> tuple[str, str] | None:
    """Why ``value`` cannot be stored as ``jsonb``: ``("invalid" | "too_large", message)``, or None.
    The size is that of compact UTF-8 JSON."""
    try:
        text = _compact_json(value)
    except (TypeError, ValueError, RecursionError):  # NaN/Infinity, non-JSON values, nesting too deep
        return "invalid", "must be plain JSON (no NaN, Infinity or invalid Unicode)"
    problem = text_problem(text)  # lone surrogates survive encoding with ensure_ascii=False
    if problem is None and "\\u0000" in text and _JSON_NUL.search(text):  # the substring test is the fast path
        problem = "must not contain NUL (\\u0000) characters"
    if problem is not None:
        return "invalid", f"strings {problem}"
    if len(text.encode("utf-8")) > max_bytes:
        return "too_large", f"at most {max_bytes} bytes of JSON"
    return None

"""User-bound tokens a browser may hold (docs/architecture.md, "Keys and scopes"; DESIGN §9).

``POST /api/v1/tokens`` (scope ``tokens``) issues a signed, expiring token bound to one ``user_id``. Nothing is
stored per token: it is ``ut_<payload>.<signature>``, the payload (user, expiry, issuing key) in base64url JSON,
the signature an HMAC-SHA256 under ``STUDIO_TOKEN_SECRET`` (default: derived from ``SECRET_KEY``), so changing
that secret revokes every token at once. A token authenticates like a key (``Authorization: Bearer <token>``)
with the scopes ``TOKEN_SCOPES``, and every endpoint it reaches acts only as its user (``studio.core.auth``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

TOKEN_PREFIX = "ut_"
TOKEN_SCOPES = frozenset({"search", "ingest", "sessions:read"})
MAX_TTL_SECONDS = 86400
DEFAULT_TTL_SECONDS = 3600


@dataclass(frozen=True)
class UserToken:
    """A verified token: whom it is bound to, until when, and which key issued it."""

    user_id: str
    expires_at: datetime
    key_id: int


def _signing_key() -> bytes:
    secret = getattr(settings, "STUDIO_TOKEN_SECRET", "") or ""
    if secret:
        return secret.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"studio user tokens", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_user_token(*, user_id: str, ttl_seconds: int, key_id: int) -> tuple[str, datetime]:
    """A token for ``user_id`` valid for ``ttl_seconds`` (1 … MAX_TTL_SECONDS); returns it and its expiry."""
    expires = int(time.time()) + int(ttl_seconds)
    payload = _b64(json.dumps({"u": user_id, "e": expires, "k": key_id}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_signing_key(), payload.encode(), hashlib.sha256).digest())
    return f"{TOKEN_PREFIX}{payload}.{signature}", datetime.fromtimestamp(expires, tz=UTC)


def verify_user_token(token: str) -> UserToken | None:
    """The token's binding if its signature holds and it has not expired; None otherwise."""
    body = token.removeprefix(TOKEN_PREFIX)
    payload, _, signature = body.partition(".")
    if not payload or not signature:
        return None
    expected = _b64(hmac.new(_signing_key(), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = json.loads(_unb64(payload))
        user_id, expires, key_id = str(claims["u"]), int(claims["e"]), int(claims["k"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires <= time.time():
        return None
    return UserToken(user_id=user_id, expires_at=datetime.fromtimestamp(expires, tz=UTC), key_id=key_id)


def is_user_token(credential: str) -> bool:
    """Whether a bearer credential is a user token (rather than an API key)."""
    return credential.startswith(TOKEN_PREFIX)

"""API keys: creation, Bearer authentication, scope permission and per-key throttling."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling

from studio.core import tokens
from studio.core.models import API_SCOPES, ApiKey

logger = logging.getLogger(__name__)

_KEY_PREFIX = "sk"
_LAST_USED_GRANULARITY = timedelta(minutes=1)

# Verified keys are remembered in-process for a few seconds, so that an authenticated request
# costs no database round trip (measured: about a quarter of a trivial request's time).
# A revoked key therefore keeps working for at most KEY_CACHE_SECONDS in each process.
KEY_CACHE_SECONDS = 5.0
_KEY_CACHE_MAX_ENTRIES = 1024
_key_cache: dict[str, tuple[float, ApiKey]] = {}
_key_cache_lock = threading.Lock()


def _monotonic() -> float:
    return time.monotonic()


def clear_key_cache() -> None:
    """Forget every cached key verification in this process (tests; after revoking in-process)."""
    with _key_cache_lock:
        _key_cache.clear()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """The caller of an API request, as far as DRF's ``request.user`` goes."""

    key_id: int
    name: str
    scopes: frozenset[str]
    is_authenticated: bool = True
    user_id: str | None = None  # a user-bound token: every request acts as this user only


def create_api_key(*, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plain key, which is never stored and shown once."""
    unknown = sorted(set(scopes) - set(API_SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(API_SCOPES)}; got {scopes}")
    max_name = ApiKey._meta.get_field("name").max_length
    if not name.strip() or len(name) > max_name or "\x00" in name:
        raise ValueError(f"name must be 1 to {max_name} characters")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    plain = f"{_KEY_PREFIX}_{prefix}_{secret}"
    key = ApiKey.objects.create(name=name, prefix=prefix, key_hash=_hash(plain), scopes=sorted(set(scopes)))
    return key, plain


def revoke_api_keys(*, pks: list[int]) -> int:
    """Revoke keys (effective at once in this process, within KEY_CACHE_SECONDS in the others)."""
    count = ApiKey.objects.filter(pk__in=pks, revoked_at__isnull=True).update(revoked_at=timezone.now())
    clear_key_cache()
    return count


def verify_api_key(plain: str) -> ApiKey | None:
    """The active key matching ``plain``, compared in constant time; None if there is none.

    A key verified within the last ``KEY_CACHE_SECONDS`` is answered from an in-process cache
    (keyed by the key's hash); only valid keys are cached, so a wrong key is always looked up.
    """
    parts = plain.split("_", 2)
    if len(parts) != 3 or parts[0] != _KEY_PREFIX:
        return None
    digest = _hash(plain)
    now = _monotonic()
    cached = _key_cache.get(digest)
    if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
        return cached[1]
    key = ApiKey.objects.filter(prefix=parts[1], revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        with _key_cache_lock:
            _key_cache.pop(digest, None)
        return None
    used_at = timezone.now()
    if key.last_used_at is None or used_at - key.last_used_at > _LAST_USED_GRANULARITY:
        # Written at most once a minute per key, so authentication stays a single read.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=used_at)
        key.last_used_at = used_at
    with _key_cache_lock:
        if len(_key_cache) >= _KEY_CACHE_MAX_ENTRIES:
            _key_cache.clear()
        _key_cache[digest] = (now, key)
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <key>``."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not token.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <API key>'.")
        credential = token.strip()
        if tokens.is_user_token(credential):
            bound = tokens.verify_user_token(credential)
            if bound is None:
                raise exceptions.AuthenticationFailed("Invalid or expired user token.")
            name = f"token for {bound.user_id}"
            return ApiKeyPrincipal(
                key_id=bound.key_id, name=name, scopes=tokens.TOKEN_SCOPES, user_id=bound.user_id
            ), None
        key = verify_api_key(credential)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiKeyPrincipal(key_id=key.pk, name=key.name, scopes=frozenset(key.scopes)), key

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents ``ApiKeyAuthentication`` in the OpenAPI schema as the ``ApiKey`` bearer scheme."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        """The security scheme object."""
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "studio API key, or a user-bound token (POST /api/v1/tokens): 'Authorization: Bearer <…>'",
        }


class HasScope(permissions.BasePermission):
    """Allows a request whose key holds the view's ``required_scope`` (401 without a key, 403 without the scope)."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, ApiKeyPrincipal):
            raise exceptions.NotAuthenticated("An API key is required: 'Authorization: Bearer <API key>'.")
        scope = getattr(view, "required_scope", None)
        if scope is None:
            return False  # a view that forgot to declare its scope is closed, not open
        if scope not in principal.scopes:
            self.message = f"This API key lacks the '{scope}' scope."
            return False
        return True


class ApiKeyRateThrottle(throttling.SimpleRateThrottle):
    """Requests per API key (``STUDIO_THROTTLE_RATE``), counted in the shared Redis cache.

    A fixed-window counter: one pipelined INCR + EXPIRE per request on a client kept for the
    process (Django's cache API builds a Redis client per call and needs two round trips, which
    cost as much as the request's INSERT). When the cache is unreachable the throttle fails open:
    PostgreSQL is the source of truth and ingestion must go on without Redis.
    """

    scope = "api_key"

    def get_cache_key(self, request, view):
        principal = request.user
        if not isinstance(principal, ApiKeyPrincipal):
            return None
        ident = principal.key_id if principal.user_id is None else f"{principal.key_id}:{principal.user_id}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        client = _throttle_client()
        if client is None:  # no Redis cache configured: DRF's own (per-process) bookkeeping
            try:
                return super().allow_request(request, view)
            except Exception:  # noqa: BLE001  a broken cache must not fail the request
                logger.warning("throttle cache unavailable; request allowed", exc_info=True)
                return True
        now = time.time()
        window = int(now // self.duration)
        redis_key = f"{settings.CACHES['default'].get('KEY_PREFIX', 'studio')}:{key}:{window}"
        try:
            pipe = client.pipeline(transaction=False)
            pipe.incr(redis_key)
            pipe.expire(redis_key, int(self.duration) + 1)
            count, _ = pipe.execute()
        except Exception:  # noqa: BLE001  fail open, see the class docstring
            logger.warning("throttle cache unavailable; request allowed", exc_info=True)
            return True
        if count > self.num_requests:
            self._retry_after = self.duration - (now - window * self.duration)
            return False
        return True

    def wait(self) -> float | None:
        return getattr(self, "_retry_after", None)


_throttle_redis = None
_throttle_redis_lock = threading.Lock()


def _throttle_client():
    """A process-wide redis-py client for the Redis cache, or None when the cache is not Redis."""
    global _throttle_redis
    cache = settings.CACHES["default"]
    if cache["BACKEND"] != "django.core.cache.backends.redis.RedisCache":
        return None
    if _throttle_redis is None:
        with _throttle_redis_lock:
            if _throttle_redis is None:
                import redis

                _throttle_redis = redis.Redis.from_url(
                    cache["LOCATION"], socket_timeout=0.5, socket_connect_timeout=0.5
                )
    return _throttle_redis

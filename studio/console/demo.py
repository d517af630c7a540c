"""The demo search page at ``/`` and "Improve now" (``POST /demo/improve``, ``GET /demo/improve/{run}``).

All exist only with ``STUDIO_DEMO=true`` (404 otherwise). The page holds no key: it holds one user-bound
token per demo user (``studio.core.tokens``, DESIGN §9), issued when the page is served under the demo
key (``STUDIO_DEMO_API_KEY``, scope ``tokens``; ``make run`` creates it). With a token the browser
searches, clicks and reads sessions only as that user, exactly as an API client would.

"Improve now" cannot go through the public API: a token has no ``admin`` scope, and a session is only
ready for improvement ``IMPROVEMENT_SETTLE_SECONDS`` after the search. ``POST /demo/improve``, called
with the user's token, therefore queues one run for a Celery worker over that user's sessions only,
settled or not, at most ``STUDIO_DEMO_IMPROVE_MAX_SESSIONS`` of them; the page polls
``GET /demo/improve/{run}`` with the same token. One such run per user is queued or running at a time.
"""

from __future__ import annotations

import json
import os

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from studio.core import tokens
from studio.core.validation import id_problem

DEMO_USERS = ("alice", "bob", "carol", "dave")
DEFAULT_QUERY = "space adventure"


def demo_enabled() -> bool:
    """Whether the demo page and its endpoint are served (``STUDIO_DEMO``)."""
    return bool(settings.STUDIO_DEMO)


def demo_api_key() -> str:
    """The key the page calls the API with: ``settings.STUDIO_DEMO_API_KEY``, else the environment."""
    return (getattr(settings, "STUDIO_DEMO_API_KEY", "") or os.environ.get("STUDIO_DEMO_API_KEY", "")).strip()


def _require_demo() -> None:
    if not demo_enabled():
        raise Http404("The demo is off (STUDIO_DEMO=false).")


def _error(code: str, message: str, *, status: int = 400, fields: dict | None = None) -> JsonResponse:
    """The API's error shape, so that the page reports every failure the same way."""
    return JsonResponse({"error": {"code": code, "message": message, "fields": fields or {}}}, status=status)


def queue_user_run(*, user_id: str):
    """The user's demo run: the one queued or running already, else a new one queued for a worker over
    that user's sessions (settled or not, at most ``STUDIO_DEMO_IMPROVE_MAX_SESSIONS``). Raises
    ``BrokerUnavailable`` (the run marked failed) when no task can be queued.

    Only the demo does this: it skips the settle time that protects real traffic from learning before
    the clicks of a search have arrived, because the person at the page has clicked already.
    """
    from improvement import selectors as improvement_selectors
    from improvement import services as improvement_services
    from improvement.models import RunTrigger

    active = improvement_selectors.active_demo_run(user_id=user_id)
    if active is not None:
        return active
    scope = improvement_services.RunScope(
        user_id=user_id, settle_seconds=0, session_limit=settings.STUDIO_DEMO_IMPROVE_MAX_SESSIONS
    )
    return improvement_services.queue_run(trigger=RunTrigger.DEMO, scope=scope)


def run_summary(run) -> str:
    """One sentence saying what a run did, for the page."""
    if run.status in ("queued", "running"):
        return f"Run {run.pk} {run.status}: a worker learns from this user's clicks."
    metrics = run.metrics or {}
    parts = [f"Run {run.pk} {run.status}: {run.used} session(s) learned from, {run.claimed} claimed"]
    skipped = sum(int(count) for count in (run.skipped or {}).values())
    if skipped:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(run.skipped.items()))
        parts.append(f"{skipped} skipped ({reasons})")
    parts.append(f"{run.objects_personalized} object(s) personalized")
    if "clicked_rank_before" in metrics and "clicked_rank_after" in metrics:
        parts.append(
            f"clicked results' mean rank in their session {metrics['clicked_rank_before']:.2f} → "
            f"{metrics['clicked_rank_after']:.2f}"
        )
    if not run.claimed:
        parts.append("nothing to learn: search, click a result, then improve")
    summary = "; ".join(parts) + "."
    return f"{summary} {run.error}".strip() if run.error else summary


def _issuing_key():
    """The demo key if it verifies and may issue tokens; None otherwise (the page explains)."""
    from studio.core.auth import verify_api_key

    plain = demo_api_key()
    key = verify_api_key(plain) if plain else None
    return key if key is not None and "tokens" in key.scopes else None


def demo_tokens() -> dict[str, str]:
    """One user-bound token per demo user, issued under the demo key ({} without a usable key)."""
    key = _issuing_key()
    if key is None:
        return {}
    ttl = tokens.DEFAULT_TTL_SECONDS
    return {user: tokens.issue_user_token(user_id=user, ttl_seconds=ttl, key_id=key.pk)[0] for user in DEMO_USERS}


@require_GET
def demo_page(request: HttpRequest) -> HttpResponse:
    """``GET /``: the demo search page."""
    _require_demo()
    config = {
        "tokens": demo_tokens(),
        "api_root": "/api/v1/",
        "improve_url": reverse("demo-improve"),
        "csrf_token": get_token(request),  # also sets the CSRF cookie /demo/improve checks
        "default_user": DEMO_USERS[0],
        "default_query": DEFAULT_QUERY,
        "users": list(DEMO_USERS),
    }
    response = render(request, "demo/index.html", {"demo": config})
    response["Cache-Control"] = "no-store"  # the page carries tokens
    response["Referrer-Policy"] = "same-origin"
    return response


def _token_user(request: HttpRequest) -> str | JsonResponse:
    """The user of the request's bearer token, or the error response (401) to return."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    bound = tokens.verify_user_token(credential.strip()) if scheme.lower() == "bearer" else None
    if bound is None:
        return _error("not_authenticated", "Send the demo user's token: 'Authorization: Bearer <token>'.", status=401)
    return bound.user_id


def _body_user(request: HttpRequest, token_user: str) -> JsonResponse | None:
    """An error response when the body is not JSON or names another user than the token's; None when fine."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return _error("invalid_json", 'The body must be JSON: {"user_id": "…"} or {}.')
    user_id = body.get("user_id", token_user) if isinstance(body, dict) else None
    problem = id_problem(user_id)  # the rule every endpoint applies to ids
    if problem:
        return _error(problem[0], f"user_id: {problem[1]}.", fields={"user_id": [problem[1]]})
    if user_id != token_user:
        message = "this token acts only for its own user"
        return _error("forbidden", message, status=403, fields={"user_id": [message]})
    return None


def run_body(run) -> dict:
    """A demo run as the page reads it."""
    return {
        "id": run.pk,
        "status": run.status,
        "claimed": run.claimed,
        "used": run.used,
        "skipped": run.skipped,
        "objects_personalized": run.objects_personalized,
        "metrics": {name: value for name, value in (run.metrics or {}).items() if name not in ("totals", "seconds")},
        "error": run.error,
        "summary": run_summary(run),
        "status_url": reverse("demo-improve-status", args=[run.pk]),
    }


@require_POST
def improve_now(request: HttpRequest) -> JsonResponse:
    """``POST /demo/improve`` with the user's token (and CSRF): queue that user's demo run (202)."""
    from improvement.services import BrokerUnavailable

    _require_demo()
    user_id = _token_user(request)
    if isinstance(user_id, JsonResponse):
        return user_id
    refused = _body_user(request, user_id)
    if refused is not None:
        return refused
    try:
        run = queue_user_run(user_id=user_id)
    except BrokerUnavailable as exc:
        return _error(exc.code, str(exc), status=503)
    return JsonResponse(run_body(run), status=202)


@require_GET
def improve_status(request: HttpRequest, run_id: int) -> JsonResponse:
    """``GET /demo/improve/{run}`` with the user's token: that user's demo run (404 for anyone else's)."""
    from improvement import selectors as improvement_selectors

    _require_demo()
    user_id = _token_user(request)
    if isinstance(user_id, JsonResponse):
        return user_id
    run = improvement_selectors.demo_run(run_id=run_id, user_id=user_id)
    if run is None:
        return _error("not_found", f"No demo run {run_id} of this user.", status=404)
    return JsonResponse(run_body(run))

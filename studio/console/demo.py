"""The demo search page at ``/`` and its one helper endpoint, ``POST /demo/improve``.

Both exist only with ``STUDIO_DEMO=true`` (404 otherwise). The page calls the public API from the
browser with the demo key (``STUDIO_DEMO_API_KEY``, scopes ``search`` and ``ingest``; ``make run``
creates it), so what it shows is exactly what an API client gets. "Improve now" cannot go through
the public API: the demo key has no ``admin`` scope, and a session is only ready for improvement
``IMPROVEMENT_SETTLE_SECONDS`` after the search. ``/demo/improve`` therefore runs one improvement
run in the request, through the pipeline's service, over that one user's sessions, settled or not.
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


def improve_user_now(*, user_id: str):
    """Run one improvement run now over ``user_id``'s pending sessions, settled or not; returns the run.

    Only the demo calls this: it skips the settle time that protects real traffic from learning
    before the clicks of a search have arrived, because the person at the page has clicked already.
    """
    from improvement import services as improvement_services
    from improvement.models import RunTrigger

    run = improvement_services.create_run(trigger=RunTrigger.API)
    return improvement_services.execute_run(run_id=run.pk, settle_seconds=0, user_id=user_id)


def run_summary(run) -> str:
    """One sentence saying what a run did, for the page."""
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


@require_GET
def demo_page(request: HttpRequest) -> HttpResponse:
    """``GET /``: the demo search page."""
    _require_demo()
    key = demo_api_key()
    config = {
        "api_key": key,
        "api_root": "/api/v1/",
        "improve_url": reverse("demo-improve"),
        "csrf_token": get_token(request),  # also sets the CSRF cookie /demo/improve checks
        "default_user": DEMO_USERS[0],
        "default_query": DEFAULT_QUERY,
        "users": list(DEMO_USERS),
    }
    response = render(request, "demo/index.html", {"demo": config})
    response["Cache-Control"] = "no-store"  # the page carries a key
    response["Referrer-Policy"] = "same-origin"
    return response


@require_POST
def improve_now(request: HttpRequest) -> JsonResponse:
    """``POST /demo/improve`` ``{"user_id": …}`` (CSRF-protected): an improvement run over that user's sessions."""
    _require_demo()
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return _error("invalid_json", 'The body must be JSON: {"user_id": "…"}.')
    user_id = body.get("user_id") if isinstance(body, dict) else None
    problem = id_problem(user_id)  # the rule every endpoint applies to ids
    if problem:
        return _error(problem[0], f"user_id: {problem[1]}.", fields={"user_id": [problem[1]]})
    run = improve_user_now(user_id=user_id)
    return JsonResponse(
        {
            "id": run.pk,
            "status": run.status,
            "claimed": run.claimed,
            "used": run.used,
            "skipped": run.skipped,
            "objects_personalized": run.objects_personalized,
            "metrics": {
                name: value for name, value in (run.metrics or {}).items() if name not in ("totals", "seconds")
            },
            "error": run.error,
            "summary": run_summary(run),
        }
    )

"""Staff-only admin dashboard: improvement runs over time, session counts by improvement status,
the latest evaluation reports, and a per-user page (sessions, personalized objects and their drift).

Plots are drawn on the server with matplotlib's Agg backend (the object API, no pyplot state, so
concurrent requests do not share a figure) and embedded as ``data:`` PNGs: no external asset, works
offline. Nothing here counts a whole large table: session counts are one GROUP BY over the status,
event rows are the planner's estimate.

The read functions come first (keyword-only, like selectors), the views last; the views are wrapped
in ``admin.site.admin_view`` where they are routed (staff only, CSRF-protected, never cached).
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.db import connection
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from clickstream.analytics import WINDOW_SESSIONS, click_analytics
from clickstream.experiments import interleaving_report
from clickstream.models import Event, ImprovementStatus, Session, ShownResult
from studio.catalogue.models import PersonalizedObject
from studio.catalogue.selectors import user_copy_footprint
from studio.core import db
from studio.core.validation import id_problem

RUNS_SHOWN = 100
USER_SESSIONS_SHOWN = 200
USER_OBJECTS_SHOWN = 500
MAX_INLINE_PNG_BYTES = 3 * 1024 * 1024
EXACT_EVENT_COUNT_UP_TO = 10_000
REPORT_VIEWS = ("seen", "reworded", "related", "held_out")
REPORT_METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")


# --- reads --------------------------------------------------------------------------------------


def recent_runs(*, limit: int = RUNS_SHOWN) -> list:
    """The latest improvement runs, oldest first (for plotting over time)."""
    from improvement.models import ImprovementRun  # improvement reads studio; studio's dashboard reads it lazily

    return list(reversed(ImprovementRun.objects.order_by("-created_at", "-pk")[:limit]))


def session_status_counts() -> dict[str, int]:
    """Sessions per improvement status, every status present (one GROUP BY)."""
    counts = {status.value: 0 for status in ImprovementStatus}
    for row in Session.objects.order_by().values("improvement_status").annotate(n=Count("id")):
        counts[row["improvement_status"]] = row["n"]
    return counts


def event_rows(*, exact_up_to: int = EXACT_EVENT_COUNT_UP_TO) -> tuple[int, bool]:
    """(event rows, exact?). Counted exactly only up to ``exact_up_to`` rows (a bounded scan that stops
    there); beyond that, the planner's estimate: instant at any size, never a full COUNT(*)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM clickstream_event LIMIT %s) AS bounded", [exact_up_to + 1])
        bounded = int(cursor.fetchone()[0])
    if bounded <= exact_up_to:
        return bounded, True
    return max(db.estimated_row_count(table="clickstream_event"), bounded), False


def recent_user_ids(*, limit: int = 20, scan: int = 500) -> list[str]:
    """Users of the latest sessions (newest first), read through the ``received_at`` index."""
    seen: list[str] = []
    latest = Session.objects.filter(user_id__isnull=False).order_by("-received_at").values_list("user_id", flat=True)
    for user_id in latest[:scan]:
        if user_id not in seen:
            seen.append(user_id)
            if len(seen) >= limit:
                break
    return seen


def user_sessions(*, user_id: str, limit: int = USER_SESSIONS_SHOWN) -> list[dict]:
    """A user's latest sessions with their shown-result and event counts."""
    events = Event.objects.filter(session=OuterRef("pk")).order_by().values("session").annotate(n=Count("id"))
    shown = ShownResult.objects.filter(session=OuterRef("pk")).order_by().values("session").annotate(n=Count("id"))
    clicked = (
        Event.objects.filter(session=OuterRef("pk"))
        .order_by("created_at")
        .values_list("object_id", flat=True)[:1]  # the first click, to show what the user went for
    )
    rows = (
        Session.objects.filter(user_id=user_id)
        .order_by("-received_at")
        .annotate(events_n=Subquery(events.values("n")), shown_n=Subquery(shown.values("n")))
        .annotate(first_event_object=Subquery(clicked))
        .values(
            "session_id",
            "search_query",
            "created_at",
            "received_at",
            "improvement_status",
            "improvement_detail",
            "improved_at",
            "is_irrelevant",
            "events_n",
            "shown_n",
            "first_event_object",
        )[:limit]
    )
    return [{**row, "events_n": row["events_n"] or 0, "shown_n": row["shown_n"] or 0} for row in rows]


def user_session_counts(*, user_id: str) -> dict[str, int]:
    """A user's sessions per improvement status (through the ``user_id`` index)."""
    counts = {status.value: 0 for status in ImprovementStatus}
    for row in Session.objects.filter(user_id=user_id).order_by().values("improvement_status").annotate(n=Count("id")):
        counts[row["improvement_status"]] = row["n"]
    return counts


def user_personalized_objects(*, user_id: str, limit: int = USER_OBJECTS_SHOWN) -> list[PersonalizedObject]:
    """A user's personalized copies, most drifted first, with their originals."""
    return list(
        PersonalizedObject.objects.filter(user_id=user_id).select_related("original").order_by("-drift", "pk")[:limit]
    )


@dataclass
class EvaluationReport:
    """One ``reports/<dataset>/report.json`` with what the dashboard shows of it."""

    dataset: str
    path: Path
    modified: datetime
    data: dict
    rows: list[dict] = field(default_factory=list)
    guards: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    runtime_seconds: float | None = None
    plot_uri: str | None = None  # the evaluation's own PNG
    delta_plot_uri: str | None = None  # Δ NDCG@10 per view and arm, drawn here
    error: str = ""


def reports_root() -> Path:
    """Where ``manage.py evaluate`` writes its reports (``reports/`` under the repository root)."""
    return Path(getattr(settings, "STUDIO_REPORTS_DIR", "") or Path(settings.BASE_DIR) / "reports")


def _interval(value) -> dict | None:
    if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
        return {
            "mean": float(value["mean"]),
            "low": float(value.get("low", value["mean"])),
            "high": float(value.get("high", value["mean"])),
        }
    return None


def report_rows(data: dict) -> list[dict]:
    """One row per (arm, view): every metric's mean and its paired Δ to no feedback with the interval."""
    rows = []
    for arm, views in (data.get("arms") or {}).items():
        if not isinstance(views, dict):
            continue
        for view in REPORT_VIEWS:
            entry = views.get(view)
            if not isinstance(entry, dict):
                continue
            deltas = entry.get("delta") or {}
            cells = []
            for metric in REPORT_METRICS:
                mean = _interval(entry.get(metric))
                delta = _interval(deltas.get(metric)) if arm != "no_feedback" else None
                verdict = ""
                if delta:
                    verdict = "better" if delta["low"] > 0 else "worse" if delta["high"] < 0 else "same"
                cells.append(
                    {
                        "metric": metric,
                        "mean": mean,
                        "delta": delta,
                        "verdict": verdict,
                        "mean_text": f"{mean['mean']:.4f}" if mean else "–",
                        "delta_text": f"{delta['mean']:+.4f} [{delta['low']:.4f}, {delta['high']:.4f}]"
                        if delta
                        else "–",
                    }
                )
            rows.append({"arm": arm, "view": view, "cells": cells})
    return rows


def _png_uri(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_INLINE_PNG_BYTES:
            return None
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def evaluation_reports(*, root: Path | None = None) -> list[EvaluationReport]:
    """Every ``<root>/*/report.json``, newest first; an unreadable one is listed with its error."""
    root = root or reports_root()
    found = []
    for path in sorted(root.glob("*/report.json")) if root.is_dir() else []:
        modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.get_current_timezone())
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            found.append(
                EvaluationReport(dataset=path.parent.name, path=path, modified=modified, data={}, error=str(exc))
            )
            continue
        report = EvaluationReport(
            dataset=str(data.get("dataset") or path.parent.name),
            path=path,
            modified=modified,
            data=data,
            rows=report_rows(data),
            guards=data.get("guards") if isinstance(data.get("guards"), dict) else {},
            targets=data.get("targets") if isinstance(data.get("targets"), dict) else {},
            params=data.get("params") if isinstance(data.get("params"), dict) else {},
            runtime_seconds=data.get("runtime_seconds"),
        )
        pngs = sorted(path.parent.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        report.plot_uri = _png_uri(pngs[0]) if pngs else None
        found.append(report)
    found.sort(key=lambda report: report.modified, reverse=True)
    return found


# --- plots --------------------------------------------------------------------------------------


def _figure(rows: int = 1, *, height: float = 2.4, width: float = 9.0):
    from matplotlib.figure import Figure  # the object API: no global pyplot state between requests

    fig = Figure(figsize=(width, height * rows), dpi=100)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _to_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def runs_plot(runs: list) -> str | None:
    """Three panels over the runs' start times: sessions per run; mean rank of the clicked results in
    their own session before → after the run; drift of the personalized copies (p50 / p90 / max)."""
    if not runs:
        return None
    import matplotlib.dates as mdates

    times = [run.started_at or run.created_at for run in runs]
    metrics = [run.metrics or {} for run in runs]
    fig, (sessions_ax, rank_ax, drift_ax) = _figure(3)
    sessions_ax.plot(times, [run.claimed for run in runs], "o-", color="#9aa7b6", label="claimed", markersize=4)
    sessions_ax.plot(times, [run.used for run in runs], "o-", color="#2f6fdf", label="learned from", markersize=4)
    sessions_ax.set_ylabel("sessions")
    sessions_ax.set_ylim(bottom=0, top=max(max(run.claimed for run in runs) * 1.15, 1))
    sessions_ax.set_title("sessions per run")
    for name, label, color in (
        ("clicked_rank_before", "before", "#b3261e"),
        ("clicked_rank_after", "after", "#1f8a4c"),
    ):
        rank_ax.plot(times, [_finite(m.get(name)) for m in metrics], "o-", color=color, label=label, markersize=4)
    rank_ax.set_ylabel("mean rank")
    rank_ax.set_title("rank of the clicked results in their session, before → after (lower is better)")
    rank_ax.invert_yaxis()
    for name, color in (("drift_p50", "#7a3ddb"), ("drift_p90", "#d08a1b"), ("drift_max", "#b3261e")):
        values = [_finite(m.get(name)) for m in metrics]
        drift_ax.plot(times, values, "o-", color=color, label=name.removeprefix("drift_"), markersize=4)
    drift_ax.set_ylabel("cosine distance")
    drift_ax.set_title("drift of the written copies from their originals")
    for ax in (sessions_ax, rank_ax, drift_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    drift_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(drift_ax.xaxis.get_major_locator()))
    return _to_uri(fig)


def status_plot(counts: dict[str, int]) -> str | None:
    """Horizontal bars: sessions per improvement status."""
    if not any(counts.values()):
        return None
    fig, (ax,) = _figure(1, height=2.0, width=6.0)
    colors = {
        "pending": "#d08a1b",
        "processing": "#2f6fdf",
        "done": "#1f8a4c",
        "skipped": "#9aa7b6",
        "failed": "#b3261e",
    }
    names = list(counts)
    ax.barh(names, [counts[name] for name in names], color=[colors.get(name, "#555") for name in names])
    ax.invert_yaxis()
    ax.set_xlabel("sessions")
    ax.grid(True, axis="x", alpha=0.3)
    return _to_uri(fig)


def report_delta_plot(report: EvaluationReport) -> str | None:
    """Grouped bars: Δ NDCG@10 to no feedback per view and arm, with the 95 % intervals."""
    arms = [arm for arm in (report.data.get("arms") or {}) if arm != "no_feedback"]
    views = [view for view in REPORT_VIEWS if any(row["view"] == view for row in report.rows)]
    if not arms or not views:
        return None
    fig, (ax,) = _figure(1, height=3.0, width=7.5)
    width = 0.8 / len(arms)
    palette = ["#b3261e", "#2f6fdf", "#1f8a4c", "#7a3ddb", "#d08a1b"]
    by_key = {(row["arm"], row["view"]): row for row in report.rows}
    for index, arm in enumerate(arms):
        means, lows, highs = [], [], []
        for view in views:
            cell = by_key.get((arm, view), {"cells": [{}]})["cells"][0]
            delta = cell.get("delta") or {"mean": math.nan, "low": math.nan, "high": math.nan}
            means.append(delta["mean"])
            lows.append(delta["mean"] - delta["low"])
            highs.append(delta["high"] - delta["mean"])
        positions = [view_index + (index - (len(arms) - 1) / 2) * width for view_index in range(len(views))]
        ax.bar(positions, means, width, yerr=[lows, highs], capsize=3, label=arm, color=palette[index % len(palette)])
    ax.axhline(0, color="#333", linewidth=0.8)
    ax.set_xticks(range(len(views)), [view.replace("_", "-") for view in views])
    ax.set_ylabel("Δ NDCG@10 vs no feedback")
    ax.set_title(f"{report.dataset}: paired Δ NDCG@10 (95 % bootstrap interval)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _to_uri(fig)


# --- views --------------------------------------------------------------------------------------


def ctr_plot(analytics) -> str | None:
    """Bars: click-through rate by position, split by what ranked the clicked result."""
    if not analytics.positions:
        return None
    fig, (ax,) = _figure(1, height=2.6, width=9.0)
    ranks = [p.position + 1 for p in analytics.positions]
    bottom = [0.0] * len(ranks)
    for name, color in (("original", "#9aa7b6"), ("shared", "#d08a1b"), ("personalized", "#2f6fdf")):
        counts = [_clicks_of(p, name) for p in analytics.positions]
        rates = [c / p.shown if p.shown else 0.0 for c, p in zip(counts, analytics.positions, strict=True)]
        ax.bar(ranks, rates, bottom=bottom, color=color, label=name)
        bottom = [b + r for b, r in zip(bottom, rates, strict=True)]
    ax.set_xlabel("rank shown")
    ax.set_ylabel("click-through rate")
    ax.set_xticks(ranks)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, title="clicked result ranked by", title_fontsize=8)
    return _to_uri(fig)


def _clicks_of(position, source: str) -> int:
    if source == "personalized":
        return position.personalized_clicks
    if source == "shared":
        return position.shared_clicks
    return position.clicks - position.personalized_clicks - position.shared_clicks


def interleaving_plot(days: list[dict]) -> str | None:
    """The learned ranking's daily win rate in the interleaving experiment, with its 95 % interval."""
    decided = [day for day in days if day["win_rate"] is not None]
    if not decided:
        return None
    fig, (ax,) = _figure(1, height=2.4, width=9.0)
    dates = [day["day"] for day in decided]
    rates = [d["win_rate"] for d in decided]
    below = [rate - d["win_rate_ci95"][0] for rate, d in zip(rates, decided, strict=True)]
    above = [d["win_rate_ci95"][1] - rate for rate, d in zip(rates, decided, strict=True)]
    ax.errorbar(
        dates, rates, yerr=[below, above], fmt="o-", color="#2f6fdf", markersize=4, capsize=3, label="win rate, 95 %"
    )
    ax.axhline(0.5, color="#b3261e", linewidth=1, linestyle="--", label="no difference")
    import matplotlib.dates as mdates

    ax.set_xlim(min(dates) - timedelta(days=1), max(dates) + timedelta(days=1))  # one day is a point, not a year
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_ylim(0, 1)
    ax.set_ylabel("learned wins / decided")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _to_uri(fig)


def _online_context() -> dict:
    """The click analytics and the interleaving experiment of the last 30 days (each over at most the latest
    ``WINDOW_SESSIONS`` sessions)."""
    analytics = click_analytics()
    experiment = interleaving_report(since=timezone.now() - timedelta(days=30), cap=WINDOW_SESSIONS)
    return {
        "analytics": analytics,
        "analytics_window": WINDOW_SESSIONS,
        "ctr_plot": ctr_plot(analytics),
        "experiment": experiment,
        "interleaving_plot": interleaving_plot(experiment["days"]),
    }


def dashboard(request: HttpRequest) -> HttpResponse:
    """``/admin/dashboard/``: runs over time, sessions by status, evaluation reports."""
    user_id = (request.GET.get("user_id") or "").strip()
    if user_id:
        return redirect("studio-user", user_id=user_id)
    runs = recent_runs()
    counts = session_status_counts()
    reports = evaluation_reports()
    for report in reports:
        report.delta_plot_uri = report_delta_plot(report)
    context = {
        **admin.site.each_context(request),
        "title": "Improvement dashboard",
        "runs": list(reversed(runs))[:20],
        "runs_total_shown": len(runs),
        "runs_plot": runs_plot(runs),
        "status_counts": counts,
        "sessions_total": sum(counts.values()),
        "status_plot": status_plot(counts),
        "event_rows": event_rows(),
        "reports": reports,
        "reports_root": reports_root(),
        "recent_users": recent_user_ids(),
        "demo_enabled": settings.STUDIO_DEMO,
        **_online_context(),
    }
    return render(request, "admin/studio/dashboard.html", context)


def user_detail(request: HttpRequest, user_id: str) -> HttpResponse:
    """``/admin/users/<user_id>/``: one user's sessions and personalized objects with their drift.
    An id no endpoint accepts (NUL, a lone surrogate, surrounding spaces) has no user: 404."""
    if id_problem(user_id):
        raise Http404("No such user id.")
    objects = user_personalized_objects(user_id=user_id)
    context = {
        **admin.site.each_context(request),
        "title": f"User {user_id}",
        "user_id": user_id,
        "sessions": user_sessions(user_id=user_id),
        "session_counts": user_session_counts(user_id=user_id),
        "personalized": objects,
        "footprint": user_copy_footprint(user_id=user_id),
        "dashboard_url": reverse("studio-dashboard"),
    }
    return render(request, "admin/studio/user.html", context)

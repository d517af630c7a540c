"""Admin for improvement runs (with "Run now") and per-session attempts."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from improvement import services
from improvement.models import ImprovementAttempt, ImprovementRun, RunTrigger


def _enqueue_from_admin(request, model_admin) -> None:
    try:
        run = services.queue_run(trigger=RunTrigger.ADMIN)
    except services.BrokerUnavailable as exc:
        model_admin.message_user(
            request, f"The task broker is unavailable; the run was not queued ({exc.detail}).", messages.ERROR
        )
        return
    url = reverse("admin:improvement_improvementrun_change", args=[run.pk])
    model_admin.message_user(
        request, format_html('Run <a href="{}">{}</a> queued; a worker starts it.', url, run.pk), messages.SUCCESS
    )


@admin.register(ImprovementRun)
class ImprovementRunAdmin(admin.ModelAdmin):
    """Runs: status, trigger, counts, headline metrics, duration. "Run now" queues a new run."""

    list_display = (
        "id",
        "status",
        "trigger",
        "created_at",
        "claimed",
        "used",
        "skipped_total",
        "failed",
        "objects_personalized",
        "clicked_rank",
        "drift_p90",
        "duration",
        "rate",
    )
    list_filter = ("status", "trigger", "created_at")
    ordering = ("-created_at",)
    actions = ["run_now"]
    readonly_fields = [field.name for field in ImprovementRun._meta.fields] + ["attempts_link"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        run_now = path(
            "run-now/", self.admin_site.admin_view(self.run_now_view), name="improvement_improvementrun_run_now"
        )
        return [run_now, *super().get_urls()]

    def run_now_view(self, request):
        """POST from the "Run now" button of the runs list."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        _enqueue_from_admin(request, self)
        return HttpResponseRedirect(reverse("admin:improvement_improvementrun_changelist"))

    @admin.action(description="Run now (queue a new improvement run)")
    def run_now(self, request, queryset) -> None:
        _enqueue_from_admin(request, self)

    @admin.display(description="skipped")
    def skipped_total(self, run: ImprovementRun) -> int:
        return sum((run.skipped or {}).values())

    @admin.display(description="clicked rank")
    def clicked_rank(self, run: ImprovementRun) -> str:
        metrics = run.metrics or {}
        if "clicked_rank_before" not in metrics:
            return "–"
        return f"{metrics['clicked_rank_before']:.2f} → {metrics['clicked_rank_after']:.2f}"

    @admin.display(description="drift p90")
    def drift_p90(self, run: ImprovementRun) -> str:
        value = (run.metrics or {}).get("drift_p90")
        return "–" if value is None else f"{value:.4f}"

    @admin.display(description="duration")
    def duration(self, run: ImprovementRun) -> str:
        return "–" if run.duration_seconds is None else f"{run.duration_seconds:.1f}s"

    @admin.display(description="sessions/s")
    def rate(self, run: ImprovementRun) -> str:
        return "–" if run.sessions_per_second is None else f"{run.sessions_per_second:.0f}"

    @admin.display(description="attempts")
    def attempts_link(self, run: ImprovementRun) -> str:
        url = reverse("admin:improvement_improvementattempt_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">attempts of this run</a>', url)


@admin.register(ImprovementAttempt)
class ImprovementAttemptAdmin(admin.ModelAdmin):
    """Each claim of a session by a run and how it ended."""

    list_display = ("id", "session_link", "user_id", "run", "outcome", "claimed_at", "finished_at", "detail")
    list_filter = ("outcome", "claimed_at")
    search_fields = ("=user_id",)
    list_select_related = ("run",)
    raw_id_fields = ("run",)
    ordering = ("-claimed_at",)
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # The run page links here filtered by run.
        return lookup == "run__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="session")
    def session_link(self, attempt: ImprovementAttempt) -> str:
        url = reverse("admin:clickstream_session_change", args=[attempt.session_id])
        return format_html('<a href="{}">{}</a>', url, attempt.session_id)

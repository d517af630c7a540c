"""Admin for the clickstream: sessions (with shown results in order, clicked ones marked, and events)
and a read-only events list that stays fast on millions of rows (no COUNT(*) of the table)."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Count, Exists, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils.functional import cached_property

from clickstream import services
from clickstream.models import Event, Session, ShownResult
from studio.core import db
from studio.core.vectors import short_vector

EXACT_COUNT_LIMIT = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts at most EXACT_COUNT_LIMIT rows; an unfiltered list of a bigger table shows the planner's
    estimate (``pg_class.reltuples``) instead of scanning the table for COUNT(*)."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            estimate = db.estimated_row_count(table=queryset.model._meta.db_table)
            if estimate > EXACT_COUNT_LIMIT:
                return estimate
        return queryset.order_by()[:EXACT_COUNT_LIMIT].count()


class ShownResultInline(admin.TabularInline):
    """The results a session showed, in order; the ones that got a click are marked."""

    model = ShownResult
    extra = 0
    can_delete = False
    fields = ("position", "object_id", "score", "clicked", "meta")
    readonly_fields = fields
    ordering = ("position",)

    def get_queryset(self, request):
        clicks = Event.objects.filter(session_id=OuterRef("session_id"), object_id=OuterRef("object_id"))
        return super().get_queryset(request).annotate(was_clicked=Exists(clicks))

    @admin.display(boolean=True, description="clicked")
    def clicked(self, result: ShownResult) -> bool:
        return getattr(result, "was_clicked", False)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class EventInline(admin.TabularInline):
    """A session's events by time (read-only)."""

    model = Event
    extra = 0
    can_delete = False
    fields = ("event_id", "object_id", "event_type", "created_at", "received_at", "meta")
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    """Search sessions; the list never counts the whole table."""

    list_display = (
        "session_id",
        "user_id",
        "short_query",
        "created_at",
        "improvement_status",
        "clicks",
        "is_irrelevant",
    )
    list_filter = ("improvement_status", "is_irrelevant", "received_at")
    search_fields = ("=session_id", "=user_id", "search_query")
    ordering = ("-received_at",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = ["mark_irrelevant", "requeue"]
    inlines = [ShownResultInline, EventInline]
    fields = (
        "session_id",
        "user_id",
        "search_query",
        "query_vector_preview",
        "search_meta",
        "created_at",
        "received_at",
        "is_irrelevant",
        "improvement_status",
        "improvement_detail",
        "attempts",
        "lease_until",
        "improved_at",
        "fingerprint",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        # Counted per listed row (a correlated subquery), never GROUP BY over the whole table.
        clicks = (
            Event.objects.filter(session_id=OuterRef("pk"), event_type="click")
            .order_by()
            .values("session_id")
            .annotate(n=Count("*"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .defer("query_vector")
            .annotate(click_count=Coalesce(Subquery(clicks, output_field=IntegerField()), Value(0)))
        )

    @admin.display(description="query", ordering="search_query")
    def short_query(self, session: Session) -> str:
        return session.search_query[:80]

    @admin.display(description="clicks", ordering="click_count")
    def clicks(self, session: Session) -> int:
        return getattr(session, "click_count", 0)

    @admin.display(description="query vector")
    def query_vector_preview(self, session: Session) -> str:
        if session.query_vector is None:
            return "— (embedded from the query by the next improvement run)"
        return short_vector(session.query_vector)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Mark selected sessions irrelevant")
    def mark_irrelevant(self, request, queryset) -> None:
        count = services.mark_sessions_irrelevant(pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Marked {count} session(s) irrelevant.")

    @admin.action(description="Requeue selected sessions for improvement")
    def requeue(self, request, queryset) -> None:
        count = services.requeue_sessions(pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Requeued {count} session(s) for improvement.")


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """Events, newest first: read-only, raw id for the session, no COUNT(*) of the table."""

    list_display = ("id", "session_link", "event_id", "object_id", "event_type", "created_at", "received_at")
    list_select_related = ("session",)
    raw_id_fields = ("session",)
    search_fields = ("=session__session_id",)
    ordering = ("-id",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 100
    readonly_fields = ("session", "event_id", "object_id", "event_type", "created_at", "received_at", "meta")

    @admin.display(description="session", ordering="session__session_id")
    def session_link(self, event: Event) -> str:
        return event.session.session_id

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

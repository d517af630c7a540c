"""Admin for the catalogue: objects with their parts (vectors shortened), personalized copies, the shared tier."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from studio.catalogue import ranking_switch, shared
from studio.catalogue.models import (
    Object,
    ObjectPart,
    PersonalizedObject,
    PersonalizedPart,
    RankingSwitch,
    SharedQuery,
)
from studio.core.vectors import short_vector


class _PartInline(admin.TabularInline):
    """Vector parts, read-only, vectors shortened (an original's or a copy's)."""

    extra = 0
    can_delete = False
    fields = ("index", "is_average", "vector_preview")
    readonly_fields = fields

    @admin.display(description="vector")
    def vector_preview(self, part: ObjectPart | PersonalizedPart) -> str:
        return short_vector(part.vector)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class ObjectPartInline(_PartInline):
    """An object's parts."""

    model = ObjectPart


@admin.register(Object)
class ObjectAdmin(admin.ModelAdmin):
    """Original catalogue items. The list never loads vectors and never counts the whole table."""

    list_display = ("object_id", "title", "updated_at")
    search_fields = ("object_id",)
    readonly_fields = ("object_id", "created_at", "updated_at")
    fields = ("object_id", "payload", "text", "created_at", "updated_at")
    inlines = [ObjectPartInline]
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="title")
    def title(self, obj: Object) -> str:
        payload = obj.payload if isinstance(obj.payload, dict) else {}
        return str(payload.get("title") or payload.get("name") or obj.text[:80])


class PersonalizedPartInline(_PartInline):
    """A personalized copy's parts."""

    model = PersonalizedPart


class PersonalizedUserFilter(admin.SimpleListFilter):
    """Filter copies by user: the users of the most recently updated copies are offered, and any
    user can be given in the URL (``?user_id=...``) or found with the exact-match search box."""

    title = "user"
    parameter_name = "user_id"

    def lookups(self, request, model_admin):
        recent = PersonalizedObject.objects.order_by("-updated_at").values_list("user_id", flat=True)[:500].iterator()
        users: list[str] = []
        current = self.value()
        if current:
            users.append(current)
        for user_id in recent:
            if user_id not in users:
                users.append(user_id)
            if len(users) >= 20:
                break
        return [(user_id, user_id) for user_id in users]

    def queryset(self, request, queryset):
        return queryset.filter(user_id=self.value()) if self.value() else queryset


@admin.register(PersonalizedObject)
class PersonalizedObjectAdmin(admin.ModelAdmin):
    """Per-user adjusted copies: who, of which original, how far they drifted, which sessions shaped them."""

    list_display = ("object_id", "user_id", "original_link", "drift", "updates", "last_run", "updated_at")
    list_filter = (PersonalizedUserFilter, "updated_at")
    search_fields = ("=user_id", "object_id")
    raw_id_fields = ("original",)
    readonly_fields = (
        "original_link",
        "user_id",
        "object_id",
        "updated_at",
        "updates",
        "last_run_link",
        "drift",
        "shaped_by",
    )
    fields = readonly_fields
    list_select_related = ("original",)
    inlines = [PersonalizedPartInline]
    show_full_result_count = False
    ordering = ("-updated_at",)
    actions = ["reset_user_copies"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="original", ordering="original__object_id")
    def original_link(self, copy: PersonalizedObject) -> str:
        url = reverse("admin:studio_object_change", args=[copy.original_id])
        return format_html('<a href="{}">{}</a>', url, copy.original.object_id)

    @admin.display(description="last run")
    def last_run_link(self, copy: PersonalizedObject) -> str:
        if copy.last_run is None:
            return "–"
        url = reverse("admin:improvement_improvementrun_change", args=[copy.last_run])
        return format_html('<a href="{}">run {}</a>', url, copy.last_run)

    @admin.display(description="sessions that shaped it")
    def shaped_by(self, copy: PersonalizedObject) -> str:
        """This user's used sessions that showed the original (clicked or pushed), newest first."""
        from clickstream.models import Session

        sessions = list(
            Session.objects.filter(
                user_id=copy.user_id, improvement_status="done", results__object_id=copy.original.object_id
            )
            .order_by("-improved_at")
            .values_list("pk", "session_id")[:50]
        )
        if not sessions:
            return "–"
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:clickstream_session_change", args=[pk]), session_id) for pk, session_id in sessions),
        )
        all_url = reverse("admin:clickstream_session_changelist") + "?" + urlencode({"q": copy.user_id})
        return format_html('{} — <a href="{}">all sessions of {}</a>', links, all_url, copy.user_id)

    @admin.action(description="Reset these users' copies (delete every copy of each selected copy's user)")
    def reset_user_copies(self, request, queryset) -> None:
        from studio.catalogue.personalization import delete_user_copies

        users = sorted(set(queryset.values_list("user_id", flat=True)))
        deleted = sum(delete_user_copies(user_id=user_id)["personalized_objects"] for user_id in users)
        self.message_user(request, f"Deleted {deleted} copies of {len(users)} user(s); their search is original again.")


@admin.register(SharedQuery)
class SharedQueryAdmin(admin.ModelAdmin):
    """The shared tier by query: its voters and, per object, the offset search applies, how many distinct users
    taught it and when; "reset" forgets what the tier learned for the selected queries."""

    list_display = ("query", "voters", "updated_at")
    search_fields = ("query",)
    readonly_fields = ("query", "voters", "updated_at", "taught_objects")
    fields = readonly_fields
    ordering = ("-updated_at",)
    show_full_result_count = False
    list_per_page = 50
    actions = ["reset_queries"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("vector")  # the list never shows the query's vector

    @admin.display(description="objects (offset in distance units; applied once users ≥ IMPROVEMENT_SHARED_MIN_USERS)")
    def taught_objects(self, query: SharedQuery) -> str:
        rows = shared.query_offsets(query=query.query, limit=100)
        if not rows:
            return "–"
        return format_html(
            "<table><tr><th>object</th><th>offset</th><th>evidence</th><th>distinct users</th><th>taught</th></tr>"
            "{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                # numbers formatted first: format_html escapes its arguments into strings
                ((r.object_id, f"{r.offset:+.4f}", f"{r.evidence:+.2f}", r.users, r.updated_at) for r in rows),
            ),
        )

    @admin.action(description="Reset the shared tier for the selected queries")
    def reset_queries(self, request, queryset) -> None:
        removed = sum(shared.reset_query(query=q) for q in queryset.values_list("query", flat=True))
        self.message_user(request, f"Reset; {removed} votes removed.")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RankingSwitch)
class RankingSwitchAdmin(admin.ModelAdmin):
    """Every change of the learned-ranking switch (the latest is in force); *Add* records a new one, e.g.
    switching learned ranking back on after the interleaving guard switched it off."""

    list_display = ("changed_at", "learned_ranking", "changed_by", "reason")
    fields = ("learned_ranking", "reason")
    ordering = ("-changed_at", "-pk")

    def save_model(self, request, obj, form, change):
        obj.changed_by = request.user.get_username()
        super().save_model(request, obj, form, change)
        ranking_switch.forget_cached_state()  # this process at once; the others within CACHE_SECONDS

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the history is append-only

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

"""Admin for the catalogue: objects with their parts (vectors shortened), personalized copies, API keys."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from studio.models import ApiKey, Object, ObjectPart, PersonalizedObject, PersonalizedPart


def short_vector(vector, shown: int = 6) -> str:
    """The first few coordinates of a vector, for display."""
    if vector is None:
        return "—"
    values = [f"{float(x):.3f}" for x in vector[:shown]]
    return f"[{', '.join(values)}, … ({len(vector)} dims)]"


class ObjectPartInline(admin.TabularInline):
    """An object's parts, vectors shortened."""

    model = ObjectPart
    extra = 0
    can_delete = False
    fields = ("index", "is_average", "vector_preview")
    readonly_fields = fields

    @admin.display(description="vector")
    def vector_preview(self, part: ObjectPart) -> str:
        return short_vector(part.vector)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


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


class PersonalizedPartInline(admin.TabularInline):
    """A personalized copy's parts, vectors shortened."""

    model = PersonalizedPart
    extra = 0
    can_delete = False
    fields = ("index", "is_average", "vector_preview")
    readonly_fields = fields

    @admin.display(description="vector")
    def vector_preview(self, part: PersonalizedPart) -> str:
        return short_vector(part.vector)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PersonalizedObject)
class PersonalizedObjectAdmin(admin.ModelAdmin):
    """Per-user adjusted copies."""

    list_display = ("object_id", "user_id", "original", "drift", "updates", "last_run", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("=user_id", "object_id")
    raw_id_fields = ("original",)
    readonly_fields = ("original", "user_id", "object_id", "updated_at", "updates", "last_run", "drift")
    list_select_related = ("original",)
    inlines = [PersonalizedPartInline]
    show_full_result_count = False
    ordering = ("-updated_at",)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """API keys; the secret is never shown (``manage.py create_api_key`` prints it once)."""

    list_display = ("name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).")

"""Admin for API keys: list, revoke; the secret is never shown."""

from __future__ import annotations

from django.contrib import admin

from studio.core.auth import revoke_api_keys
from studio.core.models import ApiKey


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
        count = revoke_api_keys(pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Revoked {count} key(s).")

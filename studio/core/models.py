"""The one model of the shared API infrastructure: API keys (registered under the ``studio`` app)."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

# ingest: write sessions and events; sessions:read: read sessions back; tokens: issue user-bound tokens.
API_SCOPES = ("ingest", "sessions:read", "search", "catalog", "admin", "tokens")


class ApiKey(models.Model):
    """An API key. Only a SHA-256 of the secret is stored; ``prefix`` finds the row."""

    name = models.CharField(max_length=128)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = ArrayField(models.CharField(max_length=16), default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(condition=Q(scopes__contained_by=list(API_SCOPES)), name="apikey_known_scopes"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        """Whether the key may still be used."""
        return self.revoked_at is None

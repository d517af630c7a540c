"""Clickstream models: a search session, the results it showed in order, and the events (clicks) on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from pgvector.django import VectorField


class ImprovementStatus(models.TextChoices):
    """Where a session stands in the improvement loop."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class Session(models.Model):
    """One search as the user saw it: query, user, and (through ShownResult) the ranking shown."""

    session_id = models.CharField(max_length=256, unique=True)
    user_id = models.CharField(max_length=256, null=True, blank=True)
    search_query = models.TextField(blank=True, default="")
    query_vector = VectorField(dimensions=settings.STUDIO_EMBEDDING_DIM, null=True, blank=True)
    search_meta = models.JSONField(default=dict, blank=True)
    fingerprint = models.CharField(max_length=64, help_text="Hash of the registered content, for idempotent replays.")
    created_at = models.DateTimeField(help_text="Client time of the search (validated).")
    received_at = models.DateTimeField(auto_now_add=True)
    is_irrelevant = models.BooleanField(default=False)
    improvement_status = models.CharField(
        max_length=16, choices=ImprovementStatus.choices, default=ImprovementStatus.PENDING
    )
    improvement_detail = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    improved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # improvement claimer: WHERE improvement_status = 'pending'
            #   AND received_at < now() - settle ORDER BY received_at FOR UPDATE SKIP LOCKED LIMIT n
            # (anonymous sessions too: they teach the shared tier)
            models.Index(
                fields=["received_at"],
                condition=Q(improvement_status="pending"),
                name="session_ready_idx",
            ),
            # reaper: WHERE improvement_status = 'processing' AND lease_until < now()
            models.Index(
                fields=["lease_until"],
                condition=Q(improvement_status="processing"),
                name="session_processing_lease_idx",
            ),
            # forget_user, per-user admin page, evaluation: WHERE user_id = %s
            models.Index(fields=["user_id"], name="session_user_idx"),
            # retention and admin date filter: WHERE received_at < %s
            models.Index(fields=["received_at"], name="session_received_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(attempts__gte=0), name="session_attempts_nonnegative"),
        ]

    def __str__(self) -> str:
        return self.session_id


class ShownResult(models.Model):
    """One result shown in a session, at ``position`` (0-based, the order shown)."""

    # No index of its own: the unique (session, position) index leads with session_id and serves every lookup.
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="results", db_index=False)
    position = models.PositiveSmallIntegerField()
    object_id = models.CharField(max_length=256)
    score = models.FloatField(null=True, blank=True)
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "position"], name="shownresult_session_position_uniq"),
            models.UniqueConstraint(fields=["session", "object_id"], name="shownresult_session_object_uniq"),
            models.CheckConstraint(condition=Q(position__gte=0), name="shownresult_position_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}@{self.position}:{self.object_id}"


class Event(models.Model):
    """Something the user did with a shown result; ``click`` by default."""

    # No index of its own: the unique (session, event_id) index leads with session_id and serves every lookup.
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="events", db_index=False)
    event_id = models.CharField(max_length=256)
    object_id = models.CharField(max_length=256)
    event_type = models.CharField(max_length=64, default="click")
    created_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "event_id"], name="event_session_event_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type}:{self.object_id}"

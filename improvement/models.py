"""Improvement runs: one execution of the adjuster over a batch of claimed sessions."""

from __future__ import annotations

from django.db import models


class RunTrigger(models.TextChoices):
    """What started a run."""

    BEAT = "beat"
    API = "api"
    ADMIN = "admin"
    COMMAND = "command"
    EVALUATION = "evaluation"


class RunStatus(models.TextChoices):
    """Lifecycle of a run."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ImprovementRun(models.Model):
    """One improvement run: parameters used, counts, before → after metrics, timing."""

    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    claimed = models.PositiveIntegerField(default=0)
    used = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(default=dict, blank=True, help_text="Skipped sessions by reason.")
    failed = models.PositiveIntegerField(default=0)
    objects_personalized = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    sessions_per_second = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["-created_at"], name="run_created_idx")]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

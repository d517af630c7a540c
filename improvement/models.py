"""Improvement runs (one execution of the adjuster over claimed sessions) and per-session attempts."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class RunTrigger(models.TextChoices):
    """What started a run."""

    BEAT = "beat"
    API = "api"
    ADMIN = "admin"
    COMMAND = "command"
    EVALUATION = "evaluation"
    DEMO = "demo"  # the demo page's "Improve now": one user's sessions, bounded


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
    task_id = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Celery task id of a beat-started run: a retried task finds its run again.",
    )
    batches = models.PositiveIntegerField(default=0, help_text="Claimed batches written (or given back).")
    worker = models.CharField(
        max_length=200, blank=True, default="", help_text="The process running it (host and pid): its claims' holder."
    )
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last sign of life of its worker; silent for IMPROVEMENT_WORKER_GRACE_SECONDS: its claims are "
        "released and the run is failed.",
    )

    class Meta:
        indexes = [
            models.Index(fields=["-created_at"], name="run_created_idx"),
            models.Index(fields=["task_id"], condition=~Q(task_id=""), name="run_task_idx"),
            # the reaper: running runs whose worker went silent
            models.Index(fields=["heartbeat_at"], condition=Q(status="running"), name="run_running_heartbeat_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"


class AttemptOutcome(models.TextChoices):
    """How one claim of a session ended."""

    PROCESSING = "processing"  # claimed, not finished yet
    DONE = "done"  # its clicks were learned
    SKIPPED = "skipped"  # irrelevant, no click, objects gone
    FAILED = "failed"  # this session could not be used (reason in ``detail``)
    EXPIRED = "expired"  # its lease ran out; the reaper gave the session back
    RELEASED = "released"  # its run gave it back (time limit, error) before finishing


class ImprovementAttempt(models.Model):
    """One claim of one session by one run: the audit trail that proves no session is processed twice.

    ``session`` is not a Django-managed constraint: clickstream deletes sessions with plain SQL (user
    deletion, retention) and knows nothing of attempts; migration 0004 adds an ``ON DELETE CASCADE``
    foreign key so PostgreSQL removes a session's attempts with it.
    """

    session = models.ForeignKey(
        "clickstream.Session",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="improvement_attempts",
    )  # indexed by the ForeignKey itself
    user_id = models.CharField(max_length=256)
    run = models.ForeignKey(ImprovementRun, on_delete=models.CASCADE, related_name="attempts", db_index=False)
    claimed_at = models.DateTimeField()
    lease_until = models.DateTimeField(help_text="The claim's lease, also its fencing token.")
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.PROCESSING)
    detail = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["run", "outcome"], name="attempt_run_outcome_idx"),
            models.Index(fields=["user_id"], name="attempt_user_idx"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.pk}: session {self.session_id} in run {self.run_id} ({self.outcome})"

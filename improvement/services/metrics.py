"""Run bookkeeping: add a batch's counts and totals to its run, under the run's row lock."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from improvement.learning.totals import RunTotals
from improvement.models import ImprovementRun


@dataclass
class BatchReport:
    """What one batch did (its run adds it to its counts; ``manage.py improve`` prints it)."""

    claimed: int
    used: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed_reasons: dict[str, int] = field(default_factory=dict)
    objects_personalized: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def record_batch(*, run_id: int, report: BatchReport, totals: RunTotals) -> None:
    """Add a batch to its run (call inside the batch's write transaction: both commit or neither)."""
    run = ImprovementRun.objects.select_for_update().get(pk=run_id)
    run.claimed += report.claimed
    run.used += report.used
    run.failed += report.failed
    run.objects_personalized += report.objects_personalized
    run.batches += 1
    run.skipped = {r: run.skipped.get(r, 0) + report.skipped.get(r, 0) for r in {*run.skipped, *report.skipped}}
    _add_totals(run, totals)
    run.save(update_fields=["claimed", "used", "failed", "objects_personalized", "batches", "skipped", "metrics"])


def count_on_run(*, run_id: int, name: str) -> None:
    """Count one event of a run that no batch report carries (``lease_lost_batches``, ``released_batches``)."""
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        _add_totals(run, RunTotals(**{name: 1}))
        run.save(update_fields=["metrics"])


def _add_totals(run: ImprovementRun, totals: RunTotals) -> None:
    run_totals = RunTotals.from_json(run.metrics.get("totals"))
    run_totals.add(totals)
    run.metrics = {**run_totals.summary(), "totals": run_totals.to_json()}

"""``manage.py improve``: one improvement run in the foreground (no Celery), with a progress bar."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from improvement import selectors, services
from improvement.models import RunStatus, RunTrigger


class Command(BaseCommand):
    help = "Run the improvement loop once, now, in this process: claim settled sessions, adjust, write."

    def handle(self, *args, **options):
        received_before = timezone.now() - timedelta(seconds=settings.IMPROVEMENT_SETTLE_SECONDS)
        ready = selectors.ready_session_count(received_before=received_before)
        run = services.create_run(trigger=RunTrigger.COMMAND)
        self.stdout.write(f"run {run.pk}: {ready} session(s) ready")
        progress = tqdm(total=ready, unit="session", disable=options.get("verbosity", 1) == 0)

        def advance(report: services.BatchReport) -> None:
            progress.update(report.claimed)
            progress.set_postfix(used=report.used, personalized=report.objects_personalized)

        try:
            run = services.execute_run(run_id=run.pk, progress=advance)
        except services.TRANSIENT_ERRORS as exc:
            services.finish_run(run_id=run.pk, status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
            raise CommandError(f"run {run.pk} failed: {exc}") from exc
        except Exception as exc:
            raise CommandError(f"run {run.pk} failed: {exc}") from exc
        finally:
            progress.close()
        metrics = run.metrics or {}
        self.stdout.write(
            f"run {run.pk} {run.status}: claimed {run.claimed}, used {run.used}, skipped {run.skipped or {}}, "
            f"failed {run.failed}, objects personalized {run.objects_personalized}; clicked rank "
            f"{metrics.get('clicked_rank_before', '–')} → {metrics.get('clicked_rank_after', '–')}; "
            f"{run.sessions_per_second or 0:.0f} sessions/s"
        )
        if run.error:
            self.stdout.write(f"note: {run.error}")

"""``manage.py evaluate``: the proof that improvement helps (docs/architecture.md).

Replays simulated users with real relevance through the real loop — catalogue load, search, session
registration, clicks, improvement runs, search again — in a throwaway database, and writes
``report.json``, ``report.md`` and ``ndcg.png`` under ``--out``. ``--sweep`` chooses the defaults.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from improvement.evaluation import loop, online


def default_out(dataset: str) -> Path:
    """``STUDIO_REPORTS_DIR/movielens``, ``STUDIO_REPORTS_DIR/<folder>`` for ``beir:PATH`` (the dashboard reads it)."""
    if dataset.startswith("beir:"):
        return Path(settings.STUDIO_REPORTS_DIR) / (Path(dataset.removeprefix("beir:")).resolve().name or "beir")
    return Path(settings.STUDIO_REPORTS_DIR) / dataset


def parse_override(text: str) -> tuple[str, object]:
    """``lr=0.003`` or ``IMPROVEMENT_LR=0.003`` → ("IMPROVEMENT_LR", 0.003); ``max_drift=`` → None."""
    key, sep, value = text.partition("=")
    if not sep:
        raise CommandError(f"--set expects KEY=VALUE, got {text!r}")
    key = key.strip().upper()
    key = key if key.startswith("IMPROVEMENT_") else f"IMPROVEMENT_{key}"
    value = value.strip()
    if value == "" or value.lower() == "none":
        return key, None
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def _arms(options: dict, *, default: Sequence[str]) -> list[str]:
    """The ``--arms`` list (checked against every arm the evaluation knows), or ``default`` without it."""
    if options["arms"] is None:
        return list(default)
    arms = [a.strip() for a in options["arms"].split(",") if a.strip()]
    unknown = [a for a in arms if a not in loop.ALL_ARMS]
    if unknown:
        raise CommandError(f"--arms: unknown {', '.join(unknown)} (choose from {', '.join(loop.ALL_ARMS)})")
    return arms


def _eval_options(options: dict, progress: bool):
    """The runner's ``EvalOptions`` from the command's options (``--arms`` checked, ``--set`` parsed)."""
    from improvement.evaluation.runner import EvalOptions

    return EvalOptions(
        dataset=options["dataset"],
        users=options["users"],
        rounds=options["rounds"],
        click_model=options["click_model"],
        eta=options["eta"],
        seed=options["seed"],
        arms=_arms(options, default=loop.ARM_NAMES),
        queries_per_user=options["queries_per_user"],
        bootstrap_samples=options["bootstrap"],
        progress=progress,
        studio_overrides=dict(parse_override(text) for text in options["set"]),
        qrels_from_export=Path(options["qrels_from_export"]) if options["qrels_from_export"] else None,
    )


class Command(BaseCommand):
    help = "Measure, on simulated users with real relevance, whether improvement makes search better."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", default="movielens", help="movielens or beir:PATH (BEIR layout folder)")
        parser.add_argument(
            "--users", type=int, default=None, help="simulated users (default: movielens 200, beir 100)"
        )
        parser.add_argument("--rounds", type=int, default=5, help="search → click → improvement rounds")
        parser.add_argument("--click-model", choices=["pbm", "cascade"], default="pbm")
        parser.add_argument("--eta", type=float, default=1.0, help="position bias of the simulated clicks (PBM)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--arms",
            default=None,
            help=f"comma-separated, from {', '.join(loop.ALL_ARMS)} (default: {', '.join(loop.ARM_NAMES)}; "
            f"--online: {', '.join(online.ONLINE_ARMS)})",
        )
        parser.add_argument("--queries-per-user", type=int, default=3)
        parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples for the intervals")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override an IMPROVEMENT_* setting for the studio and oracle arms, e.g. --set lr=0.003",
        )
        parser.add_argument("--sweep", action="store_true", help="choose the defaults on both development data sets")
        parser.add_argument(
            "--online",
            action="store_true",
            help="the interleaving harness: each learned arm (--arms) vs the base ranking, per seed",
        )
        parser.add_argument("--seeds", type=int, default=10, help="--online: seeds 0 … N-1")
        parser.add_argument(
            "--qrels-from-export",
            default=None,
            metavar="FILE",
            help="judge with a GET /api/v1/judgments CSV export (query,docid,rating) instead of the qrels (beir: only)",
        )
        parser.add_argument(
            "--out",
            default=None,
            help="output folder (default STUDIO_REPORTS_DIR/<dataset> or …/sweep, read by the dashboard)",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        if options["rounds"] < 1 or (options["users"] is not None and options["users"] < 1):
            raise CommandError("--rounds and --users must be at least 1")
        progress = not options["no_progress"]
        if options["sweep"]:
            self._sweep(options, progress)
            return
        if options["online"]:
            self._online(options, progress)
            return
        from improvement.evaluation.runner import evaluate

        eval_options = _eval_options(options, progress)
        out = Path(options["out"]) if options["out"] else default_out(options["dataset"])
        try:
            report = evaluate(eval_options, out=out)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self._summary(report, out)

    def _summary(self, report: dict, out: Path) -> None:
        """The tables, guards, targets and runtime of a written report."""
        from improvement.evaluation.report import markdown_tables

        self.stdout.write(markdown_tables(report))
        self.stdout.write(f"guards: {json.dumps(report['guards'])}")
        self.stdout.write(f"targets: {json.dumps(report.get('targets', {}))}")
        self.stdout.write(f"runtime: {report['runtime_seconds']} s; written to {out}/report.json, report.md, ndcg.png")

    def _online(self, options, progress: bool) -> None:
        if options["seeds"] < 1:
            raise CommandError("--seeds must be at least 1")
        out = Path(options["out"]) if options["out"] else default_out(options["dataset"]) / "online"
        try:
            result = online.run_online(
                dataset_name=options["dataset"],
                seeds=list(range(options["seeds"])),
                users=options["users"],
                rounds=options["rounds"],
                progress=progress,
                arms=_arms(options, default=online.ONLINE_ARMS),
            )
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        online.write(result, out)
        self.stdout.write(online.markdown(result))
        self.stdout.write(f"written to {out}/online.json, online.md")

    def _sweep(self, options, progress: bool) -> None:
        from improvement.evaluation.sweep import SWEEP_DATASETS, run_sweep, sweep_markdown

        out = Path(options["out"]) if options["out"] else Path(settings.STUDIO_REPORTS_DIR) / "sweep"
        users = dict.fromkeys(SWEEP_DATASETS, options["users"]) if options["users"] else None
        result = run_sweep(
            users=users,
            rounds=options["rounds"],
            click_model=options["click_model"],
            eta=options["eta"],
            seed=options["seed"],
            bootstrap_samples=options["bootstrap"],
            progress=progress,
            out=out,
        )
        self.stdout.write(sweep_markdown(result))
        self.stdout.write(f"runtime: {result['runtime_seconds']} s; written to {out}/sweep.json, sweep.md")

"""``evaluate``: load a data set into a throwaway database, run every arm, score, write the report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from improvement.evaluation import loop, report
from improvement.evaluation.database import throwaway_database
from improvement.evaluation.datasets import EvalDataset, load_dataset

logger = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """Options of ``manage.py evaluate`` (docs/architecture.md)."""

    dataset: str
    users: int | None = None  # None: the data set's default (MovieLens 200, BEIR 100)
    rounds: int = 5
    click_model: str = "pbm"
    eta: float = 1.0
    seed: int = 0
    arms: list[str] = field(default_factory=lambda: list(loop.ARM_NAMES))
    queries_per_user: int = 3
    bootstrap_samples: int = 1000
    progress: bool = True
    studio_overrides: dict = field(default_factory=dict)  # settings for the studio/oracle arms (sweep)
    qrels_from_export: Path | None = None  # a judgments export as the qrels (BEIR only)

    def params(self, dataset: EvalDataset) -> dict:
        """What the report records under ``params``."""
        return {
            "dataset": self.dataset,
            "users": len(dataset.users),
            "objects": len(dataset.objects),
            "rounds": self.rounds,
            "click_model": self.click_model,
            "eta": self.eta,
            "seed": self.seed,
            "arms": list(self.arms),
            "queries_per_user": self.queries_per_user,
            "shown_results": loop.SHOWN_RESULTS,
            "scoring_depth": 100,
            "bootstrap_samples": self.bootstrap_samples,
            "studio_overrides": dict(self.studio_overrides),
            **({"qrels_from_export": str(self.qrels_from_export)} if self.qrels_from_export else {}),
        }


def run_arms(options: EvalOptions, dataset: EvalDataset, arms: list[loop.Arm]) -> list[loop.ArmOutcome]:
    """Load the catalogue into the current database and run ``arms`` in order."""
    query_vectors = loop.prepare(dataset, progress=options.progress)
    ctx = loop.LoopContext(
        dataset=dataset,
        query_vectors=query_vectors,
        rounds=options.rounds,
        click_model=options.click_model,
        eta=options.eta,
        seed=options.seed,
        progress=options.progress,
    )
    return [loop.run_arm(ctx, arm) for arm in arms]


def evaluate(options: EvalOptions, *, out: Path | None = None, throwaway: bool = True) -> dict:
    """Run the evaluation and return the report (written under ``out`` when given).

    ``throwaway=False`` runs in the current database (tests that already own a throwaway one)."""
    started = time.monotonic()
    dataset = load_dataset(
        options.dataset,
        users=options.users,
        queries_per_user=options.queries_per_user,
        seed=options.seed,
        qrels_from_export=options.qrels_from_export,
    )
    arms = loop.standard_arms(options.arms, studio_overrides=options.studio_overrides)
    if throwaway:
        with throwaway_database():
            outcomes = run_arms(options, dataset, arms)
    else:
        outcomes = run_arms(options, dataset, arms)
    result = report.build_report(
        dataset=dataset,
        outcomes=outcomes,
        params=options.params(dataset),
        runtime_seconds=time.monotonic() - started,
        bootstrap_samples=options.bootstrap_samples,
        seed=options.seed,
    )
    if out is not None:
        report.write_report(result, out)
    return result

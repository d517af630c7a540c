"""A run's running totals: what every batch adds, and the headline metrics read from them.

One ``RunTotals`` per run, stored as ``ImprovementRun.metrics["totals"]`` (JSON) beside the
summary it yields, so that a retried task or a later batch adds to the same sums. Plain data,
no database: ``improvement.services.metrics`` does the bookkeeping under the run's row lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Drift histogram: geometric bins from 1e-6 to 2 (the largest cosine distance), ~7 % wide, so that
# percentiles over every batch of a run (even across task retries) are kept in a few hundred numbers.
DRIFT_EDGES = np.concatenate(([0.0], np.geomspace(1e-6, 2.0, 200)))


def drift_histogram(drifts: np.ndarray) -> list[int]:
    """Counts of drifts per ``DRIFT_EDGES`` bin (the last bin takes anything above 2)."""
    clipped = np.clip(np.asarray(drifts, dtype=np.float64), 0.0, 2.0)
    counts, _ = np.histogram(clipped, bins=DRIFT_EDGES)
    return counts.astype(int).tolist()


def drift_percentiles(histogram: Sequence[int], maximum: float) -> dict[str, float]:
    """p50 / p90 / p99 (upper bin edges, so never under-reported) and the exact max."""
    counts = np.asarray(histogram, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return {}
    cumulative = np.cumsum(counts)
    result = {}
    for name, q in (("drift_p50", 0.5), ("drift_p90", 0.9), ("drift_p99", 0.99)):
        index = int(np.searchsorted(cumulative, q * total))
        result[name] = float(min(DRIFT_EDGES[index + 1], maximum))
    result["drift_max"] = float(maximum)
    return result


def _empty_histogram() -> list[int]:
    return [0] * (len(DRIFT_EDGES) - 1)


@dataclass
class RunTotals:
    """Sums over a run's batches. Ranks and similarity changes are sums over clicked / pushed
    (session, object) pairs; losses are sums weighted by adjusted sessions; ``seconds`` per stage."""

    clicked: float = 0.0
    clicked_rank_before: float = 0.0
    clicked_rank_after: float = 0.0
    clicked_similarity_change: float = 0.0
    pushed: float = 0.0
    pushed_similarity_change: float = 0.0
    adjusted_sessions: int = 0
    loss_before: float = 0.0
    loss_after: float = 0.0
    drift_histogram: list[int] = field(default_factory=_empty_histogram)
    drift_max: float = 0.0
    failed_reasons: dict[str, int] = field(default_factory=dict)
    lease_lost_batches: int = 0
    released_batches: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict | None) -> RunTotals:
        """Totals as stored on a run (unknown keys from older versions are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in (data or {}).items() if name in known})

    def to_json(self) -> dict:
        """The totals as stored on a run."""
        return dataclasses.asdict(self)

    def add(self, other: RunTotals) -> None:
        """Add another batch's totals to these."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "drift_max":
                self.drift_max = max(mine, theirs)
            elif f.name == "drift_histogram":
                self.drift_histogram = (np.asarray(mine) + np.asarray(theirs)).astype(int).tolist()
            elif isinstance(mine, dict):
                setattr(self, f.name, {k: mine.get(k, 0) + theirs.get(k, 0) for k in {*mine, *theirs}})
            else:
                setattr(self, f.name, mine + theirs)

    def summary(self) -> dict:
        """The run's headline metrics: mean ranks, similarity changes and losses, drift percentiles."""
        summary: dict = {}
        if self.clicked:
            summary["clicked_rank_before"] = round(self.clicked_rank_before / self.clicked, 4)
            summary["clicked_rank_after"] = round(self.clicked_rank_after / self.clicked, 4)
            summary["clicked_similarity_change"] = self.clicked_similarity_change / self.clicked
        if self.pushed:
            summary["pushed_similarity_change"] = self.pushed_similarity_change / self.pushed
        if self.adjusted_sessions:
            summary["loss_before"] = self.loss_before / self.adjusted_sessions
            summary["loss_after"] = self.loss_after / self.adjusted_sessions
        summary.update(drift_percentiles(self.drift_histogram, self.drift_max))
        if self.failed_reasons:
            summary["failed_by_reason"] = dict(self.failed_reasons)
        for name in ("lease_lost_batches", "released_batches"):
            if getattr(self, name):
                summary[name] = getattr(self, name)
        summary["seconds"] = {name: round(value, 4) for name, value in self.seconds.items()}
        return summary

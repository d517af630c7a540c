"""Adjuster-only throughput (docs/architecture.md, "Targets": ≥ 3,000 sessions/s at 10 iterations on the 2-core CPU).

Synthetic batches shaped like production: sessions of ``results`` shown objects (1–2 clicked, the
rest negatives, as Embedding Studio's "all shown-unclicked"), single-part objects of dimension
``dim`` drawn with a popularity skew from a catalogue of ``objects``, queries near a clicked object.
Sessions are adjusted in batches of ``batch_size`` (IMPROVEMENT_BATCH_SIZE) with the studio's
default parameters; the figure is the median over ``runs`` of sessions / seconds spent inside
``adjust`` (input conversion included, building the Python objects not: that is the pipeline's).
Embedding Studio's parameter set (no rails) is measured in the same run as the baseline.

    .venv/bin/python benchmarks/adjuster_only.py [--quick] [--threads N]

Last line: ``{"adjuster_sessions_per_s": …, …}``. Needs no database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from improvement.learning.adjuster import adjust  # noqa: E402
from improvement.learning.params import AdjusterParams, ObjectVectors, SessionExample  # noqa: E402


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def make_batches(
    *, sessions: int, results: int, dim: int, objects: int, batch_size: int, seed: int = 0
) -> list[tuple[list[ObjectVectors], list[SessionExample]]]:
    """Synthetic batches: per batch the distinct objects it touches and its sessions (indices into them)."""
    rng = np.random.default_rng(seed)
    catalogue = _unit_rows(rng, objects, dim)
    popularity = 1.0 / np.arange(1, objects + 1) ** 0.6  # a mild head: ~15,000 distinct per 2,000 sessions
    popularity /= popularity.sum()
    batches = []
    for first in range(0, sessions, batch_size):
        count = min(batch_size, sessions - first)
        shown = np.stack([rng.choice(objects, size=results, replace=False, p=popularity) for _ in range(count)])
        distinct, local = np.unique(shown, return_inverse=True)
        local = local.reshape(shown.shape)
        batch_objects = [
            ObjectVectors(start=catalogue[o : o + 1].copy(), original=catalogue[o : o + 1].copy()) for o in distinct
        ]
        batch_sessions = []
        for row in range(count):
            n_clicked = 1 if rng.random() < 0.7 else 2
            clicked_slots = np.sort(rng.choice(results, size=n_clicked, replace=False))
            negative_slots = np.setdiff1d(np.arange(results), clicked_slots)
            query = catalogue[shown[row, clicked_slots[0]]] + 0.9 * _unit_rows(rng, 1, dim)[0]
            batch_sessions.append(
                SessionExample(
                    query=(query / np.linalg.norm(query)).astype(np.float32),
                    clicked=local[row, clicked_slots].tolist(),
                    negatives=local[row, negative_slots].tolist(),
                    clicked_positions=clicked_slots.tolist(),
                    negative_positions=negative_slots.tolist(),
                )
            )
        batches.append((batch_objects, batch_sessions))
    return batches


def _sessions_per_s(batches, params: AdjusterParams, dim: int) -> tuple[float, dict]:
    elapsed = 0.0
    total = 0
    metrics: dict = {}
    for batch_objects, batch_sessions in batches:
        started = time.perf_counter()
        result = adjust(objects=batch_objects, sessions=batch_sessions, params=params, dim=dim)
        elapsed += time.perf_counter() - started
        total += len(batch_sessions)
        metrics = result.metrics
    return total / elapsed, metrics


def measure_adjuster(
    *,
    sessions: int = 10000,
    results: int = 10,
    dim: int = 384,
    objects: int = 100000,
    iterations: int = 10,
    batch_size: int = 2000,
    runs: int = 3,
    num_threads: int | None = None,
    params: AdjusterParams | None = None,
) -> dict:
    """Median adjuster throughput over ``runs`` on synthetic data; Embedding Studio's rule as the baseline."""
    batches = make_batches(sessions=sessions, results=results, dim=dim, objects=objects, batch_size=batch_size)
    studio = (params or AdjusterParams()).with_(iterations=iterations, num_threads=num_threads, device="cpu")
    seed_rule = AdjusterParams.embedding_studio(iterations=iterations, num_threads=num_threads, device="cpu")
    _sessions_per_s(batches[:1], studio, dim)  # warm-up: first-call allocations and kernel selection
    studio_rates, seed_rates = [], []
    metrics: dict = {}
    for _ in range(runs):
        rate, metrics = _sessions_per_s(batches, studio, dim)
        studio_rates.append(rate)
        seed_rates.append(_sessions_per_s(batches, seed_rule, dim)[0])
    return {
        "adjuster_sessions_per_s": round(statistics.median(studio_rates), 1),
        "embedding_studio_params_sessions_per_s": round(statistics.median(seed_rates), 1),
        "runs_sessions_per_s": [round(r, 1) for r in studio_rates],
        "sessions": sessions,
        "batch_size": batch_size,
        "distinct_objects_per_batch": len(batches[0][0]),
        "iterations": iterations,
        "dim": dim,
        "threads": num_threads,
        "last_batch_clicked_similarity_change": round(metrics.get("clicked_similarity_change", 0.0), 5),
        "last_batch_negative_similarity_change": round(metrics.get("negative_similarity_change", 0.0), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke version")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.quick:
        figures = measure_adjuster(sessions=2000, objects=20000, runs=2, num_threads=args.threads)
    else:
        figures = measure_adjuster(num_threads=args.threads)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

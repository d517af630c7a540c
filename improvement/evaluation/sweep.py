"""``manage.py evaluate --sweep``: choose the improvement defaults from evidence.

Users are split in two halves by a hash of their id (``datasets.user_half``). On the tuning half of
both data sets, stage 1 runs the current defaults and one change at a time around them (learning
rate, pair temperature, position-bias η, drift cap, the shared tier's offset bound and skip weight); stage 2 runs
the combination of every single change that helped. A configuration is admissible only if, on both
data sets and on the tuning half, it meets the targets of docs/architecture.md on every view (seen Δ NDCG@10
above 0, related Δ ≥ −0.005, held-out Δ ≥ −0.02, nowhere below Embedding Studio's defaults) and passes its guards; among
admissible ones the largest sum of Δ NDCG@10 over every view and both data sets wins (so no view
is traded for another), but a change replaces the current defaults only when it beats them by more
than ``MIN_GAIN``: a difference smaller than the noise is no reason to move. The chosen setting is
then reported on the other half of the users.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

from improvement.evaluation import loop
from improvement.evaluation.database import throwaway_database
from improvement.evaluation.datasets import EvalDataset, load_dataset, user_half
from improvement.evaluation.report import _json_safe, markdown_tables, score_arms

# Stage 1: the defaults and one change at a time around the v2 defaults (the pairwise rule and the shared
# tier; the seed rule's own sweep is in the README's history). With stage 2, at most 11 configurations.
STAGE_ONE: list[tuple[str, dict]] = [
    ("defaults", {}),
    ("lr 0.1", {"IMPROVEMENT_LR": 0.1}),
    ("lr 1.0", {"IMPROVEMENT_LR": 1.0}),
    ("pair temperature 0.05", {"IMPROVEMENT_PAIR_TEMPERATURE": 0.05}),
    ("eta 1", {"IMPROVEMENT_POSITION_BIAS_ETA": 1.0}),
    ("drift cap 0.1", {"IMPROVEMENT_MAX_DRIFT": 0.1}),
    ("shared max offset 0.1", {"IMPROVEMENT_SHARED_MAX_OFFSET": 0.1}),
    ("shared skip weight 0", {"IMPROVEMENT_SHARED_SKIP_WEIGHT": 0.0}),
    ("shared query shift 0", {"IMPROVEMENT_SHARED_QUERY_SHIFT": 0.0}),
    ("shared query shift 0.1", {"IMPROVEMENT_SHARED_QUERY_SHIFT": 0.1}),
]
SWEEP_DATASETS = ("movielens", "beir:" + str(Path(settings.BASE_DIR).parent / "shared" / "data" / "cisi"))
# Summed Δ NDCG@10 (over every view of both data sets) a change must add to replace the defaults.
MIN_GAIN = 0.005
TARGET_LOW = {"seen": 0.0, "reworded": -0.005, "related": -0.005, "held_out": -0.02}
# The per-arm guards a configuration must pass (the others in a report concern the private arms).
GUARDS = ("single_user_invisible", "forget_exact", "drift_ok")
# DESIGN §7: one click must not evict the page; the seen view's evicted_relevant is its offline measure.
MAX_EVICTED_RELEVANT = 0.10


def half(dataset: EvalDataset, which: int) -> EvalDataset:
    """The data set restricted to one half of its users (bystanders and probes kept)."""
    return dataclasses.replace(dataset, users=[u for u in dataset.users if user_half(u.user_id) == which])


def _context(
    dataset: EvalDataset, query_vectors: dict, *, rounds: int, click_model: str, eta: float, seed: int, progress: bool
):
    return loop.LoopContext(
        dataset=dataset,
        query_vectors=query_vectors,
        rounds=rounds,
        click_model=click_model,
        eta=eta,
        seed=seed,
        progress=progress,
    )


def _deltas(arms: dict, name: str, dataset: EvalDataset) -> dict[str, dict]:
    return {view: arms[name][view]["delta"]["ndcg@10"] for view in dataset.views}


def admissible(tuning: dict[str, dict], name: str) -> tuple[bool, list[str]]:
    """Whether configuration ``name`` meets every target on every data set (tuning half); and why not."""
    misses = []
    for dataset_name, result in tuning.items():
        arms = result["arms"]
        failed = [g for g in GUARDS if result.get("guards", {}).get(name, {}).get(g) is False]
        misses += [f"{dataset_name} guard {guard} fails" for guard in failed]
        for view, delta in result["deltas"][name].items():
            if view == "seen" and delta["low"] <= TARGET_LOW["seen"]:
                misses.append(f"{dataset_name} seen Δ low {delta['low']:+.4f} ≤ 0")
            elif view != "seen" and delta["mean"] < TARGET_LOW.get(view, -0.005):
                misses.append(f"{dataset_name} {view} Δ {delta['mean']:+.4f}")
            evicted = arms[name][view].get("evicted_relevant", {}).get("mean") if view == "seen" else None
            if evicted is not None and evicted > MAX_EVICTED_RELEVANT:
                misses.append(f"{dataset_name} seen evicted_relevant {evicted:.3f} > {MAX_EVICTED_RELEVANT}")
            ours = arms[name][view]["ndcg@10"]["mean"]
            theirs = arms["embedding_studio"][view]["ndcg@10"]["mean"]
            if ours < theirs:
                misses.append(f"{dataset_name} {view} below Embedding Studio")
    return not misses, misses


def score(tuning: dict[str, dict], name: str) -> float:
    """Sum of Δ NDCG@10 means over every view of every data set."""
    return sum(delta["mean"] for result in tuning.values() for delta in result["deltas"][name].values())


def choose(table: Sequence[dict]) -> dict:
    """The admissible row with the highest score; the defaults unless that beats them by ``MIN_GAIN``."""
    defaults = next(row for row in table if row["config"] == "defaults")
    candidates = [row for row in table if row["admissible"]] or [defaults]
    best = max(candidates, key=lambda row: row["score"])
    if defaults["admissible"] and best["score"] < defaults["score"] + MIN_GAIN:
        return defaults
    return best


def run_sweep(
    *,
    datasets: Sequence[str] = SWEEP_DATASETS,
    users: dict[str, int | None] | None = None,
    rounds: int = 5,
    click_model: str = "pbm",
    eta: float = 1.0,
    seed: int = 0,
    bootstrap_samples: int = 1000,
    progress: bool = True,
    out: Path | None = None,
    stage_one: Sequence[tuple[str, dict]] = STAGE_ONE,
) -> dict:
    """Tune on one half of the users of every data set, report the chosen setting on the other half."""
    started = time.monotonic()
    users = users or {}
    loaded = {name: load_dataset(name, users=users.get(name), seed=seed) for name in datasets}
    options = {"rounds": rounds, "click_model": click_model, "eta": eta, "seed": seed, "progress": progress}
    sweep = _Sweep(loaded=loaded, configs=dict(stage_one), options=options, bootstrap_samples=bootstrap_samples)
    sweep.tune([name for name, _ in stage_one], with_baselines=True)
    sweep.stage_two(stage_one)
    table = _table(sweep.tuning, sweep.configs)
    chosen = choose(table)
    # Report the chosen setting on the other half, next to the current defaults and the baselines.
    result = _sweep_result(sweep, table, chosen, sweep.report(chosen), started)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (out / "sweep.md").write_text(sweep_markdown(result), encoding="utf-8")
    return result


def _baselines() -> list[loop.Arm]:
    """The arms every configuration is compared with: no feedback and Embedding Studio's defaults."""
    return [
        loop.Arm("no_feedback", improve=False),
        loop.Arm("embedding_studio", overrides=loop.EMBEDDING_STUDIO_OVERRIDES),
    ]


@dataclasses.dataclass
class _Sweep:
    """A sweep's data sets and loop options, its configurations (stage 1's, then the combination) and, per
    data set, what the tuning half measured: outcomes, scored arms, Δ NDCG@10 per configuration, guards."""

    loaded: dict[str, EvalDataset]
    configs: dict[str, dict]
    options: dict  # the loop's: rounds, click_model, eta, seed, progress
    bootstrap_samples: int
    tuning: dict[str, dict] = dataclasses.field(default_factory=dict)

    def tune(self, names: Sequence[str], *, with_baselines: bool) -> None:
        """Run the named configurations (after the baselines, if asked) on every tuning half; rescore."""
        for dataset_name, dataset in self.loaded.items():
            tuning = half(dataset, 0)
            arms = (_baselines() if with_baselines else []) + [loop.Arm(n, overrides=self.configs[n]) for n in names]
            outcomes = self._run(dataset, tuning, arms)
            entry = self.tuning.setdefault(dataset_name, {"outcomes": []})
            entry["outcomes"].extend(outcomes)
            entry["arms"] = self._score(tuning, entry["outcomes"])
            entry["deltas"] = {
                o.name: _deltas(entry["arms"], o.name, tuning) for o in entry["outcomes"] if o.name != "no_feedback"
            }
            entry["guards"] = {o.name: o.guards for o in entry["outcomes"]}

    def stage_two(self, stage_one: Sequence[tuple[str, dict]]) -> None:
        """Stage 2: every single change that beat the defaults' score and is admissible, combined (if several)."""
        combination = _combination(self.tuning, stage_one)
        if len(combination) > 1:
            self.configs["combined"] = combination
            self.tune(["combined"], with_baselines=False)

    def report(self, chosen: dict) -> dict[str, dict]:
        """Per data set, the baselines, the defaults and the chosen setting on the reporting half."""
        reporting: dict[str, dict] = {}
        for dataset_name, dataset in self.loaded.items():
            held = half(dataset, 1)
            arms = [*_baselines(), loop.Arm("defaults", overrides={})]
            if chosen["config"] != "defaults":
                arms.append(loop.Arm("chosen", overrides=chosen["overrides"]))
            outcomes = self._run(dataset, held, arms)
            reporting[dataset_name] = {
                "users": len(held.users),
                "arms": self._score(held, outcomes),
                "guards": {o.name: o.guards for o in outcomes},
            }
        return reporting

    def _run(self, dataset: EvalDataset, users: EvalDataset, arms: list[loop.Arm]) -> list[loop.ArmOutcome]:
        """The arms, one after the other, for some of ``dataset``'s users, in a throwaway database."""
        with throwaway_database():
            vectors = loop.prepare(dataset, progress=self.options["progress"])
            ctx = _context(users, vectors, **self.options)
            return [loop.run_arm(ctx, arm) for arm in arms]

    def _score(self, dataset: EvalDataset, outcomes: list[loop.ArmOutcome]) -> dict:
        return score_arms(dataset, outcomes, bootstrap_samples=self.bootstrap_samples, seed=self.options["seed"])


def _combination(tuning: dict[str, dict], stage_one: Sequence[tuple[str, dict]]) -> dict:
    """The overrides of every single change that beat the defaults' score and is admissible, merged."""
    base_score = score(tuning, "defaults")
    combined: dict = {}
    for name, overrides in stage_one[1:]:
        if score(tuning, name) > base_score and admissible(tuning, name)[0]:
            for key, value in overrides.items():
                # The first (stage order) helpful value of a setting wins; later ones of the same setting
                # are kept only if they score higher.
                if key not in combined or score(tuning, name) > combined[key][1]:
                    combined[key] = (value, score(tuning, name))
    return {key: value for key, (value, _) in combined.items()}


def _table(tuning: dict[str, dict], configs: dict[str, dict]) -> list[dict]:
    """One row per configuration: its overrides, whether it is admissible (and why not), its score."""
    table = []
    for name in configs:
        ok, misses = admissible(tuning, name)
        table.append(
            {
                "config": name,
                "overrides": configs[name],
                "admissible": ok,
                "misses": misses,
                "score": score(tuning, name),
            }
        )
    return table


def _sweep_result(sweep: _Sweep, table: list[dict], chosen: dict, reporting: dict, started: float) -> dict:
    """``sweep.json``: the data sets and options, the tuning half's evidence, the choice, the reporting half."""
    loaded = sweep.loaded
    return _json_safe(
        {
            "datasets": list(loaded),
            "params": {"users": {k: len(v.users) for k, v in loaded.items()}, **sweep.options},
            "tuning": {
                name: {"users": len(half(loaded[name], 0).users), "deltas": r["deltas"], "guards": r["guards"]}
                for name, r in sweep.tuning.items()
            },
            "table": table,
            "chosen": chosen,
            "reporting": reporting,
            "runtime_seconds": round(time.monotonic() - started, 1),
        }
    )


def sweep_markdown(result: dict) -> str:
    """The evidence table (tuning half: Δ NDCG@10 per view and data set) and the reporting-half tables."""
    lines = _evidence_table(result)
    chosen = result["chosen"]
    lines += [
        "",
        f"Chosen: **{chosen['config']}** {chosen['overrides'] or '(the current defaults)'}; a change must add "
        f"more than {MIN_GAIN} to the summed Δ to replace the defaults.",
        "",
    ]
    for d in result["datasets"]:
        rep = result["reporting"][d]
        lines += [f"### {d}: reporting half ({rep['users']} users)", "", markdown_tables({"arms": rep["arms"]})]
    return "\n".join(lines)


def _evidence_table(result: dict) -> list[str]:
    """The tuning half's table: per configuration, Δ NDCG@10 per data set and view, score, admissible."""
    datasets = result["datasets"]
    views_of = {name: list(result["tuning"][name]["deltas"]["defaults"]) for name in datasets}
    header = (
        ["config", "overrides"] + [f"{_short(d)} {v}" for d in datasets for v in views_of[d]] + ["score", "admissible"]
    )
    lines = [
        "### Sweep (tuning half): Δ NDCG@10 vs no feedback",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    lines += [_evidence_row(row, result["tuning"], views_of) for row in result["table"]]
    es = [f"{result['tuning'][d]['deltas']['embedding_studio'][v]['mean']:+.4f}" for d in datasets for v in views_of[d]]
    lines.append("| embedding_studio | lr=0.1, negatives=all, no rails | " + " | ".join(es) + " | | |")
    return lines


def _evidence_row(row: dict, tuning: dict, views_of: dict[str, list[str]]) -> str:
    """One configuration's row of the evidence table."""
    cells = [
        row["config"],
        ", ".join(f"{k.removeprefix('IMPROVEMENT_').lower()}={v}" for k, v in row["overrides"].items()) or "–",
    ]
    for d, views in views_of.items():
        deltas = tuning[d]["deltas"].get(row["config"], {})
        cells += [f"{deltas[v]['mean']:+.4f}" if v in deltas else "–" for v in views]
    cells += [f"{row['score']:+.4f}", "yes" if row["admissible"] else "no"]
    return "| " + " | ".join(cells) + " |"


def _short(name: str) -> str:
    return name.split("/")[-1] if name.startswith("beir:") else name

"""Scoring the arms and writing ``report.json`` (in the shape docs/architecture.md gives), ``report.md``
and the NDCG plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from improvement.evaluation.datasets import EvalDataset
from improvement.evaluation.loop import PRIVATE_ARMS, ArmOutcome
from improvement.evaluation.metrics import METRICS, bootstrap_interval, mean_scores, score_ranking

VIEW_TITLES = {
    "seen": "seen — the user repeats a training query",
    "reworded": "reworded — the same intent in other words",
    "related": "related — queries the user never ran",
    "held_out": "held-out — only relevance that never drove a click (clicked objects removed)",
    "cold": "cold — users who never click run the others' training queries (the shared tier's view)",
}
# The arms whose copies must stay close to their originals (the rails are on).
DRIFT_GUARDED_ARMS = ("studio_v1", "studio_personal", "studio", "oracle")
EVICTION_METRICS = ("evicted_relevant", "evicted_untouched")
TOP = 10


def eviction_scores(
    dataset: EvalDataset, outcome: ArmOutcome, baseline: ArmOutcome, view: str
) -> dict[int, dict[str, float]]:
    """Per user, the mean over their queries of the share of the no-feedback top 10's relevant objects
    (``evicted_relevant``) and of its objects the user neither clicked nor skipped (``evicted_untouched``)
    that are no longer in the arm's top 10."""
    by_user: dict[int, dict[str, list[float]]] = {}
    base_rankings = baseline.rankings.get(view, {})
    for key, (ids, _) in outcome.rankings.get(view, {}).items():
        user_index, query_index = key
        if key not in base_rankings:
            continue
        base_top, top = base_rankings[key][0][:TOP], set(ids[:TOP])
        relevance = dataset.users[user_index].views[view][query_index][1]
        touched = outcome.clicked.get(user_index, set()) | outcome.skipped.get(user_index, set())
        groups = {
            "evicted_relevant": [o for o in base_top if relevance.get(o, 0) > 0],
            "evicted_untouched": [o for o in base_top if o not in touched],
        }
        entry = by_user.setdefault(user_index, {name: [] for name in EVICTION_METRICS})
        for name, members in groups.items():
            if members:
                entry[name].append(sum(1 for o in members if o not in top) / len(members))
    return {
        user: {name: float(np.mean(values)) for name, values in entry.items() if values}
        for user, entry in by_user.items()
    }


def per_user_scores(
    dataset: EvalDataset, outcome: ArmOutcome, view: str, excluded: dict[int, set[str]]
) -> dict[int, dict[str, float]]:
    """Per user, the mean over their queries of each metric in ``view``."""
    by_user: dict[int, list[dict[str, float]]] = {}
    for (user_index, query_index), (ids, _) in outcome.rankings.get(view, {}).items():
        relevance = dataset.users[user_index].views[view][query_index][1]
        if view in dataset.exclude_clicked:
            drop = excluded.get(user_index, set())
            ids = [object_id for object_id in ids if object_id not in drop]
            relevance = {k: g for k, g in relevance.items() if k not in drop}
        if not any(g > 0 for g in relevance.values()):
            continue  # nothing left to find
        by_user.setdefault(user_index, []).append(score_ranking(ids, relevance))
    return {user: mean_scores(scores) for user, scores in by_user.items()}


def score_arms(
    dataset: EvalDataset,
    outcomes: Sequence[ArmOutcome],
    *,
    users: Sequence[int] | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict:
    """``{arm: {view: {metric: interval, "delta": {metric: interval}}}}`` over ``users`` (all by default).

    Held-out scoring removes, for each user, every object that user clicked in any arm, so all arms
    are scored against the same relevance (a paired comparison)."""
    excluded: dict[int, set[str]] = {}
    for outcome in outcomes:
        for user_index, objects in outcome.clicked.items():
            excluded.setdefault(user_index, set()).update(objects)
    chosen = set(range(len(dataset.users)) if users is None else users)
    baseline = next(o for o in outcomes if o.name == "no_feedback")
    arms: dict = {}
    for view in dataset.views:
        base = {u: s for u, s in per_user_scores(dataset, baseline, view, excluded).items() if u in chosen}
        for outcome in outcomes:
            scores = {u: s for u, s in per_user_scores(dataset, outcome, view, excluded).items() if u in chosen}
            entry = _view_entry(scores, base, samples=bootstrap_samples, seed=seed)
            evictions = {u: e for u, e in eviction_scores(dataset, outcome, baseline, view).items() if u in chosen}
            for name in EVICTION_METRICS:
                values = [e[name] for _, e in sorted(evictions.items()) if name in e]
                entry[name] = bootstrap_interval(values, samples=bootstrap_samples, seed=seed)
            arms.setdefault(outcome.name, {})[view] = entry
    return arms


def _view_entry(
    scores: dict[int, dict[str, float]], base: dict[int, dict[str, float]], *, samples: int, seed: int
) -> dict:
    """An arm's intervals in one view: per metric over its users, the paired Δ to the baseline over the
    users both have, and its user count."""
    common = sorted(set(scores) & set(base))
    entry: dict = {}
    for metric in METRICS:
        entry[metric] = bootstrap_interval([scores[u][metric] for u in sorted(scores)], samples=samples, seed=seed)
    entry["delta"] = {
        metric: bootstrap_interval([scores[u][metric] - base[u][metric] for u in common], samples=samples, seed=seed)
        for metric in METRICS
    }
    entry["users"] = len(scores)
    return entry


def overall_guards(outcomes: Sequence[ArmOutcome], arms: dict | None = None) -> dict[str, bool]:
    """The guards of docs/architecture.md: other users and anonymous search unchanged in every arm whose
    learning is private (no shared tier); with the shared tier (``studio``), a lone user's clicks invisible,
    forgetting exact, and cold users not worse; copies close to their originals where the rails are on."""
    private = [o for o in outcomes if o.name in PRIVATE_ARMS or o.name == "no_feedback"]
    guarded = [o for o in outcomes if o.name in DRIFT_GUARDED_ARMS] or list(outcomes)
    shared = [o for o in outcomes if o.name in ("studio", "oracle")]
    guards = {
        "other_users_unchanged": all(o.guards.get("other_users_unchanged", True) for o in private),
        "anonymous_unchanged": all(o.guards.get("anonymous_unchanged", True) for o in private),
        "drift_ok": all(o.guards.get("drift_ok", True) for o in guarded),
        "single_user_invisible": all(o.guards.get("single_user_invisible", True) for o in outcomes),
        "forget_exact": all(o.guards.get("forget_exact", True) for o in shared),
    }
    cold = ((arms or {}).get("studio") or {}).get("cold")
    if cold:
        guards["anonymous_not_worse"] = cold["delta"]["ndcg@10"]["low"] >= -0.005
    return guards


def target_checks(arms: dict, guards: dict, dataset: EvalDataset) -> dict[str, bool]:
    """The quality targets of docs/architecture.md for the studio arm (absent keys: the view or arm did not
    run)."""
    studio = arms.get("studio")
    if not studio:
        return {}
    checks: dict[str, bool] = {}
    seen = studio["seen"]["delta"]["ndcg@10"]
    checks["seen_interval_above_0"] = seen["low"] > 0
    if dataset.name == "movielens":
        checks["seen_mean_at_least_0.04"] = seen["mean"] >= 0.04
    if "related" in studio:
        checks["related_low_at_least_-0.005"] = studio["related"]["delta"]["ndcg@10"]["low"] >= -0.005
    if "held_out" in studio:
        checks["held_out_low_at_least_-0.02"] = studio["held_out"]["delta"]["ndcg@10"]["low"] >= -0.02
    if "embedding_studio" in arms:
        checks["not_below_embedding_studio"] = all(
            studio[view]["ndcg@10"]["mean"] >= arms["embedding_studio"][view]["ndcg@10"]["mean"] for view in studio
        )
    checks.update(_v2_checks(arms, dataset))
    checks["guards_pass"] = all(guards.values())
    return checks


def _v2_checks(arms: dict, dataset: EvalDataset) -> dict[str, bool]:
    """The v2 targets: against ``studio_v1`` on seen, the cold view, evictions on seen."""
    studio, v1 = arms["studio"], arms.get("studio_v1")
    checks: dict[str, bool] = {}
    seen = studio["seen"]["delta"]["ndcg@10"]
    if v1:
        factor = 1.0 if dataset.name == "movielens" else 1.5
        checks[f"seen_at_least_{factor}x_studio_v1"] = seen["mean"] >= factor * v1["seen"]["delta"]["ndcg@10"]["mean"]
    if "cold" in studio:
        cold = studio["cold"]["delta"]["ndcg@10"]
        floor = 0.02 if dataset.name == "movielens" else 0.04
        checks["cold_interval_above_0"] = cold["low"] > 0
        checks[f"cold_mean_at_least_{floor}"] = cold["mean"] >= floor
    evicted = studio["seen"].get("evicted_relevant", {}).get("mean")
    if evicted is not None:
        checks["seen_evicted_relevant_at_most_0.10"] = evicted <= 0.10
    return checks


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def build_report(
    *,
    dataset: EvalDataset,
    outcomes: Sequence[ArmOutcome],
    params: dict,
    runtime_seconds: float,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict:
    """The report dict: the keys of docs/architecture.md first, then extras (curves, per-arm guards, targets,
    counts)."""
    arms = score_arms(dataset, outcomes, bootstrap_samples=bootstrap_samples, seed=seed)
    guards = overall_guards(outcomes, arms)
    report = {
        "dataset": dataset.name,
        "params": params,
        "arms": arms,
        "guards": guards,
        "runtime_seconds": round(runtime_seconds, 1),
        "targets": target_checks(arms, guards, dataset),
        "curves": {o.name: o.curve for o in outcomes},
        "arm_details": {o.name: _arm_details(o) for o in outcomes},
    }
    return _json_safe(report)


def _arm_details(outcome: ArmOutcome) -> dict:
    """What an arm ran with and did: parameters, guards, counts, runs and seconds."""
    return {
        "parameters": outcome.parameters,
        "guards": outcome.guards,
        "sessions": outcome.sessions,
        "clicks": outcome.clicks,
        "events_recorded": outcome.events_recorded,
        "improvement_runs": len(outcome.runs),
        "runs": outcome.runs,
        "seconds": round(outcome.seconds, 1),
        "timings": {k: round(v, 1) for k, v in outcome.timings.items()},
    }


def _cell(interval: dict, *, signed: bool = False) -> str:
    if interval.get("mean") is None:
        return "–"
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(interval['mean'])} [{fmt.format(interval['low'])}, {fmt.format(interval['high'])}]"


def markdown_tables(report: dict) -> str:
    """One table per view: arms × metrics (mean [95 % interval]) and the paired Δ NDCG@10 to no feedback."""
    lines = []
    views = [v for v in VIEW_TITLES if v in next(iter(report["arms"].values()))]
    for view in views:
        lines.append(f"#### {VIEW_TITLES.get(view, view)}")
        lines.append("")
        lines.append(
            "| arm | " + " | ".join(METRICS) + " | Δ NDCG@10 vs no feedback | Δ Recall@100 | evicted relevant |"
        )
        lines.append("| --- |" + " --- |" * (len(METRICS) + 3))
        for arm, per_view in report["arms"].items():
            entry = per_view[view]
            cells = [_cell(entry[m]) for m in METRICS]
            delta = "–" if arm == "no_feedback" else _cell(entry["delta"]["ndcg@10"], signed=True)
            delta_recall = "–" if arm == "no_feedback" else _cell(entry["delta"]["recall@100"], signed=True)
            evicted = "–" if arm == "no_feedback" else _cell(entry.get("evicted_relevant") or {})
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {delta} | {delta_recall} | {evicted} |")
        lines.append("")
    return "\n".join(lines)


def write_markdown(report: dict, path: Path, *, plot_name: str | None = None) -> None:
    """``report.md``: parameters, a table per view, guards, targets, runtime."""
    lines = _summary_lines(report)
    lines += _arm_detail_lines(report.get("arm_details", {}))
    if report.get("targets"):
        lines += ["#### targets (docs/architecture.md, Targets; studio arm)", "", "| target | met |", "| --- | --- |"]
        lines += [f"| {key} | {'yes' if ok else 'NO'} |" for key, ok in report["targets"].items()]
        lines.append("")
    if plot_name:
        lines += [f"![NDCG@10 (seen) per improvement run]({plot_name})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _summary_lines(report: dict) -> list[str]:
    """The title, the run's parameters, the tables per view and the guards."""
    params = report["params"]
    return [
        f"# Evaluation: {report['dataset']}",
        "",
        f"{params.get('users')} simulated users, {params.get('rounds')} rounds, clicks: {params.get('click_model')} "
        f"(η = {params.get('eta')}), seed {params.get('seed')}, runtime {report['runtime_seconds']} s. "
        "Intervals: bootstrap 95 % over users; Δ is the paired difference to no feedback.",
        "",
        markdown_tables(report),
        "#### guards",
        "",
        "| guard | pass |",
        "| --- | --- |",
        *[f"| {key} | {'pass' if value else 'FAIL'} |" for key, value in report["guards"].items()],
        "",
    ]


def _arm_detail_lines(details: dict) -> list[str]:
    """A table of what each arm did (sessions, clicks, runs, copies and their closeness); none without details."""
    if not details:
        return []
    lines = [
        "| arm | sessions | clicks | runs | copies | mean cos(copy, original) | seconds |",
        "| --- |" + " --- |" * 6,
    ]
    for arm, d in details.items():
        g = d.get("guards", {})
        cos = g.get("mean_cosine")
        lines.append(
            f"| {arm} | {d['sessions']} | {d['clicks']} | {d['improvement_runs']} | {g.get('copies', 0)} | "
            f"{'–' if cos is None else f'{cos:.4f}'} | {d['seconds']} |"
        )
    lines.append("")
    return lines


def write_plot(report: dict, path: Path) -> None:
    """PNG: seen NDCG@10 per arm after each improvement run (0 = before any)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for arm, curve in report["curves"].items():
        ax.plot(range(len(curve)), curve, marker="o", label=arm)
    ax.set_xlabel("improvement runs")
    ax.set_ylabel("NDCG@10 (seen)")
    ax.set_title(f"{report['dataset']}: NDCG@10 on repeated queries")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict, out: Path) -> dict[str, Path]:
    """Write report.json, report.md and ndcg.png under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "ndcg.png"}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    write_plot(report, paths["plot"])
    write_markdown(report, paths["markdown"], plot_name=paths["plot"].name)
    return paths

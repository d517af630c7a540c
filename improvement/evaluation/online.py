"""``manage.py evaluate --online``: the interleaving experiment with the simulated users (docs/architecture.md,
"Online proof").

Per seed, in a throwaway database: ``no_feedback`` runs first (the offline baseline); then each learned arm runs
with ``STUDIO_INTERLEAVE_FRACTION=1``, so that every training search shows a team draft of that arm's learned
ranking and the base ranking, the simulated users click on it with the evaluation's click model, and the clicks
credit teams exactly as on live traffic (``clickstream.experiments``). Per arm and seed: wins, losses, ties, the
sign test, the sessions needed to reach p < 0.05 (in the order they were registered), the same run's offline
Δ NDCG@10 on the seen view, whether the two agree in sign, and whether the interleaving guard (at its configured
thresholds) trips and, with auto-off, switches learned ranking off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from django.test.utils import override_settings

from clickstream import experiments
from improvement.evaluation import loop, report
from improvement.evaluation.database import throwaway_database
from improvement.evaluation.datasets import EvalDataset, load_dataset

# embedding_studio: worse offline on CISI. click_spam: bots teach the shared tier junk, under its bound;
# click_spam_unbounded: the same with the bound lifted (worse on purpose: the guard must trip).
ONLINE_ARMS = ("studio", "embedding_studio", "click_spam", "click_spam_unbounded")
ALPHA = 0.05


def run_online(
    *,
    dataset_name: str,
    seeds: list[int],
    users: int | None,
    rounds: int,
    progress: bool,
    arms: Sequence[str] = ONLINE_ARMS,
) -> dict:
    """The harness over ``seeds`` for one data set: a row per (arm, seed) and a summary per arm.
    ``arms``: the learned arms, each interleaved against the base ranking (``no_feedback`` is the baseline)."""
    arms = [name for name in arms if name != "no_feedback"]
    rows = []
    for seed in seeds:
        dataset = load_dataset(dataset_name, users=users, seed=seed)
        with throwaway_database():
            vectors = loop.prepare(dataset, progress=progress)
            ctx = loop.LoopContext(
                dataset=dataset,
                query_vectors=vectors,
                rounds=rounds,
                click_model="pbm",
                eta=1.0,
                seed=seed,
                progress=progress,
            )
            by_name = {arm.name: arm for arm in loop.standard_arms(["no_feedback", *arms])}
            baseline = loop.run_arm(ctx, by_name["no_feedback"])
            rows += [_arm_row(ctx, dataset, by_name[name], baseline, seed) for name in arms]
    return {"dataset": dataset_name, "seeds": seeds, "rows": rows, "summary": _summary(rows, arms)}


def _arm_row(ctx: loop.LoopContext, dataset: EvalDataset, arm: loop.Arm, baseline, seed: int) -> dict:
    interleaved = replace(arm, overrides={**arm.overrides, "STUDIO_INTERLEAVE_FRACTION": 1.0})
    outcome = loop.run_arm(ctx, interleaved)
    outcomes = experiments.session_outcomes(prefix=f"{arm.name}-r")  # its training sessions, not the probes'
    wins, losses = outcomes.count(1), outcomes.count(-1)
    scores = report.score_arms(dataset, [baseline, outcome], bootstrap_samples=200, seed=seed)
    delta = scores[arm.name]["seen"]["delta"]["ndcg@10"]["mean"]
    p_value = experiments.sign_test_p(wins, losses)
    return {
        "arm": arm.name,
        "seed": seed,
        "sessions": len(outcomes),
        "wins": wins,
        "losses": losses,
        "ties_or_no_click": len(outcomes) - wins - losses,
        "p_value": p_value,
        "sessions_to_p05": experiments.sessions_to_significance(outcomes, alpha=ALPHA),
        "offline_delta_seen": delta,
        "agrees": (wins > losses) == (delta > 0) and wins != losses and delta != 0,
        **_guard(),
    }


def _guard() -> dict:
    """The guard at its configured thresholds over what this arm recorded, and what auto-off would do."""
    from improvement.services.guard import enforce_interleaving_guard
    from studio.catalogue import ranking_switch
    from studio.models import RankingSwitch

    with override_settings(STUDIO_INTERLEAVE_FRACTION=1.0, STUDIO_INTERLEAVE_AUTO_OFF=True):
        tripped = experiments.guard_status()["tripped"]
        switched_off = enforce_interleaving_guard()
    RankingSwitch.objects.all().delete()  # the next arm starts with learned ranking on
    ranking_switch.forget_cached_state()
    return {"guard_tripped": tripped, "switched_off": switched_off}


def _summary(rows: list[dict], arms: Sequence[str]) -> dict:
    summary = {}
    for arm in arms:
        mine = [row for row in rows if row["arm"] == arm]
        reached = [row["sessions_to_p05"] for row in mine if row["sessions_to_p05"] is not None]
        summary[arm] = {
            "seeds": len(mine),
            "significant": sum(row["p_value"] < ALPHA for row in mine),
            "agree": sum(row["agrees"] for row in mine),
            "max_sessions_to_p05": max(reached) if len(reached) == len(mine) and mine else None,
            "median_sessions_to_p05": sorted(reached)[len(reached) // 2] if reached else None,
            "guard_tripped": sum(row["guard_tripped"] for row in mine),
        }
    return summary


def markdown(result: dict) -> str:
    """The harness's table: one line per (arm, seed), then the summary per arm."""
    lines = [
        f"### Online (interleaving) harness: {result['dataset']}",
        "",
        "| arm | seed | sessions | wins | losses | ties / no click | p | sessions to p < 0.05 "
        "| offline Δ seen | agrees | guard |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['arm']} | {row['seed']} | {row['sessions']} | {row['wins']} | {row['losses']} "
            f"| {row['ties_or_no_click']} | {row['p_value']:.2g} | {row['sessions_to_p05'] or '–'} "
            f"| {row['offline_delta_seen']:+.4f} | {'yes' if row['agrees'] else 'no'} "
            f"| {'tripped' if row['guard_tripped'] else '–'} |"
        )
    lines.append("")
    for arm, entry in result["summary"].items():
        lines.append(f"- **{arm}**: " + ", ".join(f"{key} {value}" for key, value in entry.items()))
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    """``online.json`` and ``online.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "online.json").write_text(json.dumps(report._json_safe(result), indent=2))
    (out / "online.md").write_text(markdown(result))

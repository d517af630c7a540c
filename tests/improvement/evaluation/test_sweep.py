"""improvement.evaluation.sweep: which settings are admissible, and when a change beats the defaults. No database."""

from __future__ import annotations


def _interval(mean: float, half: float = 0.01) -> dict:
    return {"mean": mean, "low": mean - half, "high": mean + half}


def _tuning(deltas: dict[str, dict[str, float]], es: dict[str, float]) -> dict:
    """A fake tuning result for one data set: per config, per view Δ NDCG@10 (and NDCG = 0.1 + Δ)."""
    arms = {"embedding_studio": {v: {"ndcg@10": {"mean": 0.1 + d}} for v, d in es.items()}}
    for name, per_view in deltas.items():
        arms[name] = {v: {"ndcg@10": {"mean": 0.1 + d}} for v, d in per_view.items()}
    return {
        "arms": arms,
        "deltas": {name: {v: _interval(d) for v, d in per_view.items()} for name, per_view in deltas.items()},
    }


def test_sweep_admits_only_settings_that_hold_on_every_view_and_data_set():
    from improvement.evaluation.sweep import admissible, score

    es = {"seen": 0.01, "related": -0.05}
    tuning = {
        "a": _tuning({"defaults": {"seen": 0.05, "related": 0.0}, "bold": {"seen": 0.09, "related": -0.02}}, es),
        "b": _tuning({"defaults": {"seen": 0.03, "related": 0.0}, "bold": {"seen": 0.06, "related": 0.0}}, es),
    }
    assert admissible(tuning, "defaults") == (True, [])
    ok, misses = admissible(tuning, "bold")  # best seen gain, but it costs the related view on data set a
    assert not ok and misses == ["a related Δ -0.0200"]
    assert score(tuning, "bold") > score(tuning, "defaults")
    tuning["b"]["deltas"]["defaults"]["seen"] = _interval(0.005)  # interval reaches below 0
    assert admissible(tuning, "defaults")[1] == ["b seen Δ low -0.0050 ≤ 0"]


def test_sweep_refuses_settings_that_evict_the_users_relevant_results():
    """A gain bought by evicting more than a tenth of the seen view's relevant results is not admissible."""
    from improvement.evaluation.sweep import admissible

    es = {"seen": 0.01}
    tuning = {"a": _tuning({"defaults": {"seen": 0.05}, "greedy": {"seen": 0.08}}, es)}
    tuning["a"]["arms"]["defaults"]["seen"]["evicted_relevant"] = {"mean": 0.047}
    tuning["a"]["arms"]["greedy"]["seen"]["evicted_relevant"] = {"mean": 0.115}
    assert admissible(tuning, "defaults") == (True, [])
    assert admissible(tuning, "greedy") == (False, ["a seen evicted_relevant 0.115 > 0.1"])


def test_sweep_refuses_settings_that_fail_a_guard():
    """A gain whose run lets one user's clicks show in others' rankings is not admissible."""
    from improvement.evaluation.sweep import admissible

    tuning = {"a": _tuning({"defaults": {"seen": 0.05}, "leaky": {"seen": 0.08}}, {"seen": 0.01})}
    tuning["a"]["guards"] = {"defaults": {"single_user_invisible": True}, "leaky": {"single_user_invisible": False}}
    assert admissible(tuning, "defaults") == (True, [])
    assert admissible(tuning, "leaky") == (False, ["a guard single_user_invisible fails"])


def test_sweep_keeps_the_defaults_unless_a_change_clearly_beats_them():
    from improvement.evaluation.sweep import MIN_GAIN, choose

    table = [
        {"config": "defaults", "admissible": True, "score": 0.150},
        {"config": "noise", "admissible": True, "score": 0.150 + MIN_GAIN / 2},
        {"config": "harmful", "admissible": False, "score": 0.300},
    ]
    assert choose(table)["config"] == "defaults"
    table.append({"config": "better", "admissible": True, "score": 0.150 + 2 * MIN_GAIN})
    assert choose(table)["config"] == "better"
    table[0]["admissible"] = False
    table.pop()
    assert choose(table)["config"] == "noise"  # defaults miss a target: the best admissible change

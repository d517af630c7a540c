"""clickstream.experiments and clickstream.judgments with their API: clicks credit the team that showed the
result, the sign test and interval, the guard in health, and the judgments export (CSV for Quepid, JSONL)."""

from __future__ import annotations

import json

import pytest
from scipy.stats import binomtest

from clickstream import experiments
from clickstream.experiments import Tally, sign_test_p, verdict, wilson_interval
from tests.clickstream.support import interleaved_session
from tests.improvement.support import click


def test_clicks_credit_the_team_that_showed_the_result(db, make_client):
    click(interleaved_session(), "a", "c")  # learned twice: a win
    click(interleaved_session(), "b")  # base: a loss
    click(interleaved_session(), "a", "b")  # one each: a tie
    click(interleaved_session(), "a", "b", "d")  # base 2, learned 1: a loss
    interleaved_session()  # no click: counted, decides nothing
    click(interleaved_session(interleaving=False), "a")  # not in the experiment
    click(interleaved_session(), "a", event_type="view")  # a type with no learning weight is no click

    body = make_client("admin").get("/api/v1/experiments/interleaving").json()
    assert (body["sessions"], body["wins"], body["losses"], body["ties"]) == (6, 1, 2, 1)
    assert body["win_rate"] == pytest.approx(1 / 3)
    assert body["p_value"] == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    low, high = body["win_rate_ci95"]
    assert 0 <= low < 1 / 3 < high <= 1
    assert len(body["days"]) == 1 and body["days"][0]["wins"] == 1


def test_the_sign_test_matches_scipy_and_the_interval_covers_the_rate():
    for wins, losses in ((0, 0), (0, 1), (5, 5), (12, 3), (3, 40), (510, 480), (2000, 1800)):
        expected = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
        assert sign_test_p(wins, losses) == pytest.approx(expected, rel=1e-9), (wins, losses)
        interval = wilson_interval(wins, wins + losses)
        if wins + losses:
            assert interval[0] <= wins / (wins + losses) <= interval[1]
        else:
            assert interval is None
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)  # Wilson's own worked example
    assert verdict(Tally(10, 0, 0, 3))["win_rate"] is None


def test_the_experiment_api_needs_admin_and_a_valid_since(make_client):
    assert make_client("search", "ingest").get("/api/v1/experiments/interleaving").status_code == 403
    admin = make_client("admin")
    for since in ("yesterday", "2999-01-01", "0001-01-01T00:00:00+23:00"):
        response = admin.get("/api/v1/experiments/interleaving", {"since": since})
        assert response.status_code == 400 and "since" in response.json()["error"]["fields"], since
    assert admin.get("/api/v1/experiments/interleaving", {"unknown": 1}).status_code == 400
    assert admin.get("/api/v1/experiments/interleaving", {"since": "2026-01-01"}).json()["sessions"] == 0
    # fuzzing found it: an offset Python accepts and PostgreSQL does not (-18:37) is read in UTC, not a 500
    far = admin.get("/api/v1/experiments/interleaving", {"since": "0128-12-13T04:37:54-18:37"})
    assert far.status_code == 200 and far.json()["since"].startswith("0128-12-13T23:14:54")


def test_the_guard_trips_when_the_learned_ranking_loses_significantly(db, settings, client):
    settings.STUDIO_INTERLEAVE_FRACTION = 0.5
    settings.STUDIO_INTERLEAVE_GUARD_MIN_SESSIONS = 8
    settings.STUDIO_INTERLEAVE_GUARD_P = 0.05
    for _ in range(7):
        click(interleaved_session(), "b")
    assert not experiments.guard_status()["tripped"]  # 7 decisive sessions: below the minimum
    click(interleaved_session(), "d")
    guard = experiments.guard_status()
    assert guard["tripped"] and guard["losses"] == 8 and guard["p_value"] < 0.05
    health = client.get("/api/v1/health").json()["interleaving"]
    assert health["ok"] is False and "loses" in health["warning"]
    settings.STUDIO_INTERLEAVE_FRACTION = 0.0
    assert client.get("/api/v1/health").json()["interleaving"] is None


def test_judgments_count_shown_examined_and_clicked_and_grade_them(db, make_client):
    click(interleaved_session(query="Space  Adventure"), "b")  # a and b examined (at or above the last click)
    interleaved_session(query="space adventure ")  # no click: shown only
    click(interleaved_session(query="other"), "a")
    admin = make_client("admin")

    lines = b"".join(admin.get("/api/v1/judgments", {"format": "jsonl"}).streaming_content).decode().splitlines()
    rows = {(row["query"], row["docid"]): row for row in map(json.loads, lines)}
    assert {key: (r["shown"], r["examined"], r["clicks"], r["rating"]) for key, r in rows.items()} == {
        ("space adventure", "a"): (2, 1, 0, 1),  # (0 + 1) / (1 + 2) = 0.33
        ("space adventure", "b"): (2, 1, 1, 3),  # (1 + 1) / (1 + 2) = 0.67
        ("space adventure", "c"): (2, 0, 0, 0),  # never reached
        ("space adventure", "d"): (2, 0, 0, 0),
        ("other", "a"): (1, 1, 1, 3),
        ("other", "b"): (1, 0, 0, 0),
        ("other", "c"): (1, 0, 0, 0),
        ("other", "d"): (1, 0, 0, 0),
    }
    assert rows[("space adventure", "b")]["estimate"] == pytest.approx(2 / 3, abs=1e-6)

    response = admin.get("/api/v1/judgments", {"min_sessions": 2})
    assert response["Content-Type"].startswith("text/csv")
    csv_lines = b"".join(response.streaming_content).decode().splitlines()
    assert csv_lines[0] == "query,docid,rating"
    assert csv_lines[1:] == [f"space adventure,{d},{g}" for d, g in (("a", 1), ("b", 3), ("c", 0), ("d", 0))]


def test_the_judgments_export_refuses_bad_parameters(make_client):
    admin = make_client("admin")
    for params, field in (
        ({"format": "xml"}, "format"),
        ({"min_sessions": 0}, "min_sessions"),
        ({"since": "x"}, "since"),
    ):
        response = admin.get("/api/v1/judgments", params)
        assert response.status_code == 400 and field in response.json()["error"]["fields"], params
    assert make_client("ingest").get("/api/v1/judgments").status_code == 403

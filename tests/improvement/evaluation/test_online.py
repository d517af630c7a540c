"""improvement.evaluation.online: the interleaving harness (``manage.py evaluate --online``) on a tiny collection."""

from __future__ import annotations

from clickstream.experiments import sessions_to_significance
from improvement.evaluation import online
from tests.improvement.evaluation.support import evaluation_databases, tiny_collection


def test_sessions_to_significance_counts_sessions_until_the_sign_test_first_passes():
    assert sessions_to_significance([1] * 5) is None  # five straight wins: two-sided p = 0.0625
    assert sessions_to_significance([1] * 6) == 6  # six: p = 0.031
    assert sessions_to_significance([0, 0, 1, 1, 0, 1, 1, 1, 1]) == 9  # ties and no-click sessions count too
    assert sessions_to_significance([1, -1] * 20) is None


def test_the_harness_interleaves_every_training_search_and_reports_each_arm(tmp_path, unblocked_database):
    tiny_collection(tmp_path / "tiny")
    result = online.run_online(dataset_name=f"beir:{tmp_path / 'tiny'}", seeds=[0], users=6, rounds=2, progress=False)
    assert [row["arm"] for row in result["rows"]] == list(online.ONLINE_ARMS)
    for row in result["rows"]:
        assert row["sessions"] > 0 and row["wins"] + row["losses"] + row["ties_or_no_click"] == row["sessions"]
        assert 0 <= row["p_value"] <= 1 and isinstance(row["agrees"], bool)
    assert set(result["summary"]) == set(online.ONLINE_ARMS)
    online.write(result, tmp_path / "out")
    assert "| studio | 0 |" in (tmp_path / "out" / "online.md").read_text()
    assert not evaluation_databases()


def test_a_judgments_export_reads_back_as_qrels(make_client, tmp_path):
    """The round trip: clicks on live sessions → GET /judgments (CSV) → the evaluation's qrels."""
    from clickstream import services
    from clickstream.models import Session
    from improvement.evaluation.datasets import read_exported_qrels
    from tests.improvement.support import click

    tiny_collection(tmp_path / "tiny")
    queries = {f"q{t}": f"a practical guide to {topic}" for t, topic in enumerate(("astronomy", "cooking"))}
    for qid, text in queries.items():
        topic = text.rsplit(" ", 1)[1]
        for n in range(3):
            session_id = f"{qid}-{n}"
            services.register_session(
                session_id=session_id,
                user_id=f"u{n}",
                search_query=f"  A Practical Guide to {topic.title()} ",  # as typed: the export normalizes it
                query_vector=None,
                results=[services.ShownResultInput(object_id=f"{topic}-{i}", score=None) for i in range(4)],
                search_meta={},
            )
            click(Session.objects.get(session_id=session_id), f"{topic}-2")
    export = b"".join(make_client("admin").get("/api/v1/judgments").streaming_content)
    (tmp_path / "judgments.csv").write_bytes(export)
    known = {f"{topic}-{i}" for topic in ("astronomy", "cooking") for i in range(8)}
    qrels = read_exported_qrels(tmp_path / "judgments.csv", known, queries)
    # each clicked doc: examined 3, clicked 3 → (3 + 1) / (3 + 2) = 0.8 → 3; the two above it 0.2 → 1; below: 0
    assert qrels == {
        qid: {f"{topic}-0": 1, f"{topic}-1": 1, f"{topic}-2": 3}
        for qid, topic in (("q0", "astronomy"), ("q1", "cooking"))
    }


def test_evaluate_takes_an_export_as_its_qrels(tmp_path, unblocked_database):
    import json

    from django.core.management import call_command

    tiny_collection(tmp_path / "tiny")
    rows = ["query,docid,rating"] + [
        f"a practical guide to {topic},{topic}-{i},{3 if i == 5 else 0}"
        for topic in ("astronomy", "cooking", "gardening")
        for i in range(8)
    ]
    (tmp_path / "judgments.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    call_command(
        "evaluate",
        f"--dataset=beir:{tmp_path / 'tiny'}",
        f"--qrels-from-export={tmp_path / 'judgments.csv'}",
        "--users=4",
        "--rounds=1",
        "--arms=studio",
        "--bootstrap=20",
        "--no-progress",
        f"--out={out}",
    )
    report = json.loads((out / "report.json").read_text())
    assert report["params"]["qrels_from_export"].endswith("judgments.csv")
    assert not evaluation_databases()

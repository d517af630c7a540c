"""A test-size evaluation through the real loop (``manage.py evaluate`` on a tiny BEIR-layout folder in a
throwaway database), and the database pieces of the harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from improvement.evaluation.database import throwaway_database
from improvement.evaluation.loop import copy_similarity
from tests.conftest import unit_vector
from tests.test_evaluation_units import write_beir

TOPICS = {
    "astronomy": ["telescopes", "planets", "comets", "galaxies", "the moon", "stars", "nebulae", "eclipses"],
    "cooking": ["bread", "soups", "pasta", "spices", "grilling", "baking cakes", "sauces", "knife skills"],
    "gardening": ["tomatoes", "roses", "compost", "pruning", "seeds", "soil", "herbs", "watering"],
    "sailing": ["knots", "navigation", "wind", "sails", "anchoring", "tides", "racing", "boat repair"],
    "chess": ["openings", "endgames", "tactics", "tournaments", "grandmasters", "pawns", "blitz", "puzzles"],
    "painting": ["watercolor", "oil paint", "brushes", "portraits", "landscapes", "color theory", "canvas", "murals"],
}


def tiny_collection(folder) -> None:
    """Six topics of eight documents; each topic's query judges three of its documents relevant (grade 2)
    and the other five not, so that clicks, not the text, tell them apart."""
    documents, queries, qrels = {}, {}, []
    for t, (topic, subjects) in enumerate(TOPICS.items()):
        queries[f"q{t}"] = f"a practical guide to {topic}"
        for s, subject in enumerate(subjects):
            doc_id = f"{topic}-{s}"
            documents[doc_id] = f"An introduction to {topic}: {subject}, explained for beginners with examples."
            qrels.append((f"q{t}", doc_id, 2 if s in (2, 5, 7) else 0))
    write_beir(folder, documents=documents, queries=queries, qrels=qrels)


@pytest.fixture
def unblocked_database(django_db_blocker):
    """The evaluation makes and drops its own database on the server, as the command does."""
    with django_db_blocker.unblock():
        yield


def _evaluation_databases() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'studio_eval_%%'")
        return [row[0] for row in cursor.fetchall()]


def test_test_size_evaluation_beats_no_feedback_and_keeps_guards(tmp_path, unblocked_database):
    tiny_collection(tmp_path / "tiny")
    before = set(_evaluation_databases())
    out = tmp_path / "report"
    call_command(
        "evaluate",
        "--dataset",
        f"beir:{tmp_path / 'tiny'}",
        "--users",
        "16",
        "--queries-per-user",
        "2",
        "--rounds",
        "3",
        "--out",
        str(out),
        "--no-progress",
        "--bootstrap",
        "500",
    )
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"dataset", "params", "arms", "guards", "runtime_seconds"}
    assert set(report["arms"]) == {"no_feedback", "embedding_studio", "studio", "oracle"}
    assert set(report["arms"]["studio"]) == {"seen", "related"}

    seen = report["arms"]["studio"]["seen"]["delta"]["ndcg@10"]
    assert seen["low"] > 0, seen  # studio defaults beat no feedback on the repeated queries
    assert report["arms"]["oracle"]["seen"]["delta"]["ndcg@10"]["mean"] > 0
    assert report["guards"] == {"other_users_unchanged": True, "anonymous_unchanged": True, "drift_ok": True}

    details = report["arm_details"]
    assert details["studio"]["events_recorded"] > 0 and details["studio"]["improvement_runs"] == 3
    assert details["studio"]["guards"]["copies"] > 0
    assert details["no_feedback"]["guards"]["copies"] == 0
    curve = report["curves"]["studio"]
    assert len(curve) == 3 + 1 and curve[-1] > curve[0]
    assert len(set(report["curves"]["no_feedback"])) == 1  # nothing learned, nothing moves
    assert (out / "ndcg.png").stat().st_size > 0 and "| studio |" in (out / "report.md").read_text()
    # The throwaway database is gone and the connection points back where it was.
    assert set(_evaluation_databases()) == before


def test_throwaway_database_is_dropped_even_on_error(unblocked_database):
    original = connection.settings_dict["NAME"]
    with pytest.raises(RuntimeError), throwaway_database() as name:
        assert connection.settings_dict["NAME"] == name
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM studio_object")  # migrated
            assert cursor.fetchone()[0] == 0
        raise RuntimeError("boom")
    assert connection.settings_dict["NAME"] == original
    assert name not in _evaluation_databases()


@pytest.mark.django_db
def test_copy_similarity_measures_cosine_to_the_original():
    from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart

    original = Object.objects.create(object_id="o1")
    ObjectPart.objects.create(object=original, index=0, vector=unit_vector(1.0, 0.0))
    copy = PersonalizedObject.objects.create(original=original, user_id="u", object_id="o1_u")
    tilted = np.array(unit_vector(1.0, 1.0)) / np.sqrt(2)
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=tilted.tolist())
    measured = copy_similarity()
    assert measured["copies"] == 1
    assert measured["mean_cosine"] == pytest.approx(np.sqrt(0.5), abs=1e-5)
    assert measured["min_cosine"] == pytest.approx(np.sqrt(0.5), abs=1e-5)


def test_guard_catches_a_ranking_change_for_someone_who_never_clicked(tmp_path, unblocked_database):
    """A faulty run that also writes a copy for a bystander (who never clicks) must fail the guard."""
    from improvement.evaluation import loop
    from improvement.evaluation.datasets import load_beir
    from studio.models import Object, PersonalizedObject, PersonalizedPart

    tiny_collection(tmp_path / "tiny")
    dataset = load_beir(tmp_path / "tiny", users=4, queries_per_user=1)
    bystander = dataset.bystanders[0]
    qid = bystander.train[0][0]
    with throwaway_database():
        vectors = loop.prepare(dataset, progress=False)

        def leaky_improve(overrides):
            runs = loop.run_improvement(overrides)
            ids, _ = loop.rank(query_vector=vectors[qid], user_id=bystander.user_id)
            original = Object.objects.get(object_id=ids[-1])  # the last of 100 jumps to the top
            copy = PersonalizedObject.objects.create(
                original=original, user_id=bystander.user_id, object_id=f"{original.object_id}_{bystander.user_id}"
            )
            PersonalizedPart.objects.create(personalized=copy, index=0, vector=vectors[qid])
            return runs

        ctx = loop.LoopContext(
            dataset=dataset,
            query_vectors=vectors,
            rounds=1,
            click_model="pbm",
            eta=1.0,
            seed=0,
            progress=False,
            improve=leaky_improve,
        )
        studio_arm = next(arm for arm in loop.standard_arms(["studio"]) if arm.name == "studio")
        outcome = loop.run_arm(ctx, studio_arm)
    assert outcome.guards["other_users_unchanged"] is False
    assert outcome.guards["anonymous_unchanged"] is True  # copies never reach anonymous search

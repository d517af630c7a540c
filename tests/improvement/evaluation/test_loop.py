"""improvement.evaluation.loop: the standard arms, copy similarity, and the guard that catches a ranking change
for someone who never clicked."""

from __future__ import annotations

import numpy as np
import pytest

from improvement.evaluation.database import throwaway_database
from improvement.evaluation.loop import copy_similarity, standard_arms
from tests.improvement.evaluation.support import tiny_collection
from tests.support import unit_vector


def test_arms():
    names = [arm.name for arm in standard_arms(["studio"])]
    assert names == ["no_feedback", "studio"]  # the baseline is always run
    arms = {arm.name: arm for arm in standard_arms()}
    assert arms["oracle"].click_eta == 0.0 and not arms["no_feedback"].improve
    assert arms["embedding_studio"].overrides["IMPROVEMENT_LR"] == 0.1
    assert arms["embedding_studio"].overrides["IMPROVEMENT_MAX_DRIFT"] is None
    with pytest.raises(ValueError):
        standard_arms(["bogus"])


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


def test_an_arms_settings_hold_while_its_rankings_are_measured(tmp_path, unblocked_database, monkeypatch):
    """Settings that act only at search time (the shared tier's bound) must be in force during the arm's
    searches, not only during its improvement runs: else a sweep over them measures the defaults again."""
    from django.conf import settings

    from improvement.evaluation import loop
    from improvement.evaluation.datasets import load_beir

    tiny_collection(tmp_path / "tiny")
    dataset = load_beir(tmp_path / "tiny", users=2, queries_per_user=1)
    seen_while_measuring = []
    measure = loop._final_evaluation

    def recording(ctx, outcome, bar):
        seen_while_measuring.append(settings.IMPROVEMENT_SHARED_MAX_OFFSET)
        return measure(ctx, outcome, bar)

    monkeypatch.setattr(loop, "_final_evaluation", recording)
    with throwaway_database():
        vectors = loop.prepare(dataset, progress=False)
        ctx = loop.LoopContext(
            dataset=dataset, query_vectors=vectors, rounds=1, click_model="pbm", eta=1.0, seed=0, progress=False
        )
        loop.run_arm(ctx, loop.Arm("wide", overrides={"IMPROVEMENT_SHARED_MAX_OFFSET": 0.123}))
    assert seen_while_measuring == [0.123]


def test_the_click_spam_arm_teaches_the_shared_tier_what_nobody_wants_without_being_interleaved(
    tmp_path, unblocked_database
):
    """The online guard's worse-on-purpose arm: bots post the anonymous first page of every training query as a
    client would, click a result no simulated user finds relevant, and the shared tier learns to promote it."""
    from django.test.utils import override_settings

    from clickstream.models import Session, ShownResult
    from improvement.evaluation import loop
    from improvement.evaluation.datasets import load_beir
    from studio.catalogue.shared import normalize_query
    from studio.models import SharedEvidence

    tiny_collection(tmp_path / "tiny")
    dataset = load_beir(tmp_path / "tiny", users=4, queries_per_user=1)
    relevant = loop._training_queries(dataset)
    spam = next(arm for arm in loop.standard_arms(["click_spam"]) if arm.name == "click_spam")
    with throwaway_database(), override_settings(STUDIO_INTERLEAVE_FRACTION=1.0):
        vectors = loop.prepare(dataset, progress=False)
        ctx = loop.LoopContext(
            dataset=dataset, query_vectors=vectors, rounds=2, click_model="pbm", eta=1.0, seed=0, progress=False
        )
        loop.run_arm(ctx, spam)
        bots = Session.objects.filter(session_id__startswith="spam-click_spam-")
        assert bots.count() == 2 * loop.SPAM_VOTERS * len(relevant)
        assert not ShownResult.objects.filter(session__in=bots, meta__has_key="team").exists()
        assert ShownResult.objects.filter(session__session_id__startswith="click_spam-r", meta__has_key="team").exists()
        promoted = SharedEvidence.objects.filter(evidence__gt=0, users__gte=loop.SPAM_VOTERS).select_related("object")
        relevant_by_query = {normalize_query(dataset.queries[qid]): objects for qid, objects in relevant.items()}
        assert promoted and {row.query for row in promoted} <= set(relevant_by_query)
        assert all(row.object.object_id not in relevant_by_query[row.query] for row in promoted)

"""improvement.evaluation.datasets: the BEIR and MovieLens readers and the users' halves. No database."""

from __future__ import annotations

import pytest

from improvement.evaluation.datasets import load_beir, load_movielens, user_half
from tests.improvement.evaluation.support import write_beir


def test_beir_reader(tmp_path):
    documents = {str(i): f"text {i}" for i in range(6)}
    queries = {"q1": "one", "q2": "two", "q3": "three", "q4": "four", "q5": "unjudged"}
    qrels = [("q1", "0", 1), ("q1", "1", 2), ("q2", "2", 1), ("q3", "3", 1), ("q4", "4", 0), ("q4", "5", 1)]
    qrels.append(("q2", "missing-doc", 1))
    write_beir(tmp_path, documents=documents, queries=queries, qrels=qrels)
    data = load_beir(tmp_path, users=4, queries_per_user=1, related_per_user=2, seed=0)
    assert len(data.objects) == 6 and data.objects[0].text == "Doc 0. text 0"
    assert set(data.queries) == {"q1", "q2", "q3", "q4"}  # q5 has no judgment
    assert data.views == ("seen", "related", "cold")
    trainees = [user for user in data.users if user.train]
    cold = [user for user in data.users if not user.train]
    assert len(trainees) == 4 and len(cold) == 1
    trained_queries = {q for user in trainees for q, _ in user.train}
    for user in cold:  # never clicks, never searches in training; scored on queries the others trained
        assert not user.clicks and set(user.views) == {"cold"}
        assert {q for q, _ in user.views["cold"]} <= trained_queries
    for user in trainees:
        trained = {q for q, _ in user.train}
        related = {q for q, _ in user.views["related"]}
        assert len(trained) == 1 and not trained & related  # nobody trains on a related query
        for q, relevance in user.views["seen"] + user.views["related"]:
            assert all(g >= 1 for g in relevance.values()) and "missing-doc" not in relevance
    # Every user draws from the same training half of the judged queries.
    pools = {q for user in trainees for q, _ in user.train}
    assert not pools & {q for user in trainees for q, _ in user.views["related"]}
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path / "nowhere")


def test_movielens_reader_splits_ratings_by_time():
    data = load_movielens(users=30, seed=0)
    trainees = [user for user in data.users if user.train]
    cold = [user for user in data.users if not user.train]
    assert len(trainees) == 30 and len(cold) == 7 and len(data.objects) == 1682
    assert data.views == ("seen", "reworded", "related", "held_out", "cold")
    trained_queries = {q for user in trainees for q, _ in user.train}
    assert not {u.user_id.removeprefix("cold-") for u in cold} & {u.user_id for u in trainees}  # other people
    for user in cold:
        assert not user.clicks and {q for q, _ in user.views["cold"]} <= trained_queries
    for user in trainees:
        seen = dict(user.views["seen"])
        for qid, train_relevance in user.train:
            assert qid.startswith("g:") and data.queries[qid].endswith(" movies")
            assert set(train_relevance) <= set(seen[qid])  # full relevance includes the earlier ratings
        for qid, later in user.views["held_out"]:
            train_relevance = dict(user.train)[qid]
            assert later and not set(later) & set(train_relevance)  # later ratings never drove a click
            assert set(later) <= set(seen[qid])
        trained_genres = {g for qid, _ in user.train for g in qid[2:].split("+")}
        for qid, relevance in user.views["related"]:
            assert qid not in seen and relevance
            assert trained_genres & set(qid[2:].split("+"))
        for qid, _ in user.views["reworded"]:
            assert qid.split(":", 1)[1] in seen and data.queries[qid] != data.queries[qid.split(":", 1)[1]]


def test_user_halves_are_stable_and_balanced():
    halves = [user_half(f"ml-{n}") for n in range(1000)]
    assert halves == [user_half(f"ml-{n}") for n in range(1000)]
    assert 400 < sum(halves) < 600

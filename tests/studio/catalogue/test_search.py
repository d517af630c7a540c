"""studio.catalogue.search: ranking (``search_objects``) on the real PostgreSQL + pgvector, hand-made vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from studio.catalogue import search
from studio.models import Object, ObjectPart
from tests.studio.catalogue.support import at_angle, make_copy, make_object
from tests.support import unit_vector


def ranking(**kwargs) -> list[tuple[str, float, bool]]:
    """(object_id, distance, personalized) of every hit, in order."""
    kwargs.setdefault("limit", 100)
    return [(h.object_id, h.distance, h.personalized) for h in search.search_objects(**kwargs).hits]


def ids(**kwargs) -> list[str]:
    return [object_id for object_id, _, _ in ranking(**kwargs)]


# --- metrics ---------------------------------------------------------------------------------


def test_cosine_exact_order_distances_and_scores(db):
    make_object("west", unit_vector(-1.0, 0.0))
    make_object("north", unit_vector(0.0, 2.0))  # length does not matter for cosine
    make_object("east", unit_vector(3.0, 0.0))
    make_object("north-east", unit_vector(0.8, 0.6))
    result = search.search_objects(query_vector=unit_vector(1.0, 0.0), limit=10)
    got = [(h.rank, h.object_id, round(h.distance, 5), round(h.score, 5), h.personalized) for h in result.hits]
    assert got == [
        (1, "east", 0.0, 1.0, False),
        (2, "north-east", 0.2, 0.8, False),
        (3, "north", 1.0, 0.0, False),
        (4, "west", 2.0, -1.0, False),
    ]
    assert result.meta["metric"] == "cosine"


def test_dot_exact_order_distances_and_scores(db, settings):
    settings.STUDIO_METRIC = "dot"
    make_object("long-east", unit_vector(3.0, 0.0))
    make_object("east", unit_vector(1.0, 0.0))
    make_object("diagonal", unit_vector(2.0, 2.0))
    make_object("south", unit_vector(0.0, -1.0))
    hits = search.search_objects(query_vector=unit_vector(1.0, 0.5), limit=10).hits
    # q·p: long-east 3, diagonal 3 → tie broken by insertion order (stable id), east 1, south −0.5
    got = [(h.object_id, round(h.distance, 5), round(h.score, 5)) for h in hits]
    assert got == [("long-east", -3.0, 3.0), ("diagonal", -3.0, 3.0), ("east", -1.0, 1.0), ("south", 0.5, -0.5)]


def test_euclid_exact_order_distances_and_scores(db, settings):
    settings.STUDIO_METRIC = "euclid"
    make_object("far", unit_vector(0.0, 2.0))
    make_object("same", unit_vector(1.0, 0.0))
    make_object("double", unit_vector(2.0, 0.0))
    make_object("origin-ish", unit_vector(0.0, 0.5))
    hits = search.search_objects(query_vector=unit_vector(1.0, 0.0), limit=10).hits
    got = [(h.object_id, round(h.distance, 5), round(h.score, 5)) for h in hits]
    assert got == [
        ("same", 0.0, 0.0),
        ("double", 1.0, -1.0),
        ("origin-ish", round(math.sqrt(1.25), 5), -round(math.sqrt(1.25), 5)),
        ("far", round(math.sqrt(5), 5), -round(math.sqrt(5), 5)),
    ]


def test_multi_part_object_ranks_by_its_best_part(db):
    make_object("single-30", at_angle(30))
    make_object("two-parts", at_angle(170), at_angle(10))  # its far part comes first
    make_object("single-20", at_angle(20))
    got = ranking(query_vector=at_angle(0))
    assert [object_id for object_id, _, _ in got] == ["two-parts", "single-20", "single-30"]
    assert got[0][1] == pytest.approx(1 - math.cos(math.radians(10)), abs=1e-6)
    assert len(got) == 3  # an object appears once however many parts it has


# --- personalization -------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclid"])
def test_a_copy_scores_as_its_stored_half_precision_vector_under_every_metric(db, settings, metric):
    # Cosine scores copies in halfvec against the unit query (no cast per copy), dot and euclid cast them
    # to vector: either way a copy's distance is its stored (float16) vector's exact distance to the query.
    settings.STUDIO_METRIC = metric
    rng = np.random.default_rng(7)
    query = 3.0 * rng.normal(size=384)  # not unit length: the cosine path scales it itself
    originals = [make_object(f"o{i}", rng.normal(size=384).tolist()) for i in range(20)]
    stored = {}
    for original in originals[:10]:
        vector = rng.normal(size=384)
        make_copy(original, "alice", vector.tolist())
        stored[original.object_id] = vector.astype(np.float16).astype(np.float64)
    hits = search.search_objects(query_vector=query.tolist(), user_id="alice", limit=20).hits
    copied = [hit for hit in hits if hit.personalized]
    assert sorted(hit.object_id for hit in copied) == sorted(stored)

    def exact(vector):
        if metric == "cosine":
            return 1 - query @ vector / (np.linalg.norm(query) * np.linalg.norm(vector))
        return -(query @ vector) if metric == "dot" else np.linalg.norm(query - vector)

    for hit in copied:
        assert hit.distance == pytest.approx(exact(stored[hit.object_id]), rel=1e-4, abs=1e-4)


def test_copy_replaces_its_original_for_its_user_only(db):
    for angle in (0, 10, 20, 30, 40):
        make_object(f"a{angle}", at_angle(angle))
    far = make_object("far", at_angle(90))
    query = at_angle(0)
    before_anonymous = ranking(query_vector=query)
    before_other = ranking(query_vector=query, user_id="bob")
    assert before_anonymous == before_other
    assert [i for i, _, _ in before_anonymous][-1] == "far"

    make_copy(far, "alice", at_angle(5))

    alice = ranking(query_vector=query, user_id="alice")
    assert [(i, p) for i, _, p in alice] == [
        ("a0", False),
        ("far", True),
        ("a10", False),
        ("a20", False),
        ("a30", False),
        ("a40", False),
    ]
    assert alice[1][1] == pytest.approx(1 - math.cos(math.radians(5)), abs=1e-6)
    assert [i for i, _, _ in alice].count("far") == 1  # never beside its own original
    # nobody else sees alice's copy, and their rankings did not move
    assert ranking(query_vector=query) == before_anonymous
    assert ranking(query_vector=query, user_id="bob") == before_other


def test_copy_can_also_push_an_object_down(db):
    near = make_object("near", at_angle(0))
    make_object("mid", at_angle(45))
    make_copy(near, "alice", at_angle(80))
    assert ids(query_vector=at_angle(0), user_id="alice") == ["mid", "near"]
    assert ids(query_vector=at_angle(0)) == ["near", "mid"]


def test_user_sees_only_own_copies_among_several_users(db):
    objs = [make_object(f"o{angle}", at_angle(angle)) for angle in (0, 30, 60, 90)]
    make_copy(objs[3], "alice", at_angle(1))
    make_copy(objs[2], "bob", at_angle(2))
    alice = ranking(query_vector=at_angle(0), user_id="alice")
    bob = ranking(query_vector=at_angle(0), user_id="bob")
    assert [(i, p) for i, _, p in alice] == [("o0", False), ("o90", True), ("o30", False), ("o60", False)]
    assert [(i, p) for i, _, p in bob] == [("o0", False), ("o60", True), ("o30", False), ("o90", False)]


def test_multi_part_copy_scored_by_its_best_part(db):
    obj = make_object("x", at_angle(90))
    make_object("y", at_angle(20))
    make_copy(obj, "alice", at_angle(100), at_angle(10))
    got = ranking(query_vector=at_angle(0), user_id="alice")
    assert [(i, p) for i, _, p in got] == [("x", True), ("y", False)]
    # copies are stored in half precision: the distance carries float16's rounding (~1e-5 here), no more
    assert got[0][1] == pytest.approx(1 - math.cos(math.radians(10)), abs=5e-5)


def test_personalized_meta_counts(db):
    objs = [make_object(f"o{angle}", at_angle(angle)) for angle in (0, 30, 60)]
    make_copy(objs[0], "alice", at_angle(1))
    make_copy(objs[1], "alice", at_angle(31))
    meta = search.search_objects(query_vector=at_angle(0), user_id="alice").meta
    assert meta["personalized_count"] == 2
    assert meta["original_candidates"] == 1  # the two copied originals are not candidates
    assert meta["ef_search"] >= 40
    assert meta["exact"] is True  # three objects cannot fill a page of ten from the index: scanned exactly


# --- pagination ------------------------------------------------------------------------------


def test_pagination_has_no_gaps_or_repeats(db):
    for angle in range(0, 175, 5):  # 35 objects
        make_object(f"o{angle:03d}", at_angle(angle))
    objs = list(Object.objects.filter(object_id__in=["o050", "o120"]))
    make_copy(objs[0], "alice", at_angle(1))
    make_copy(objs[1], "alice", at_angle(121))
    for user in (None, "alice"):
        full = ranking(query_vector=at_angle(0), user_id=user, limit=100)
        assert len(full) == 35
        pages, ranks = [], []
        for offset in range(0, 40, 6):
            result = search.search_objects(query_vector=at_angle(0), user_id=user, limit=6, offset=offset)
            pages += [(h.object_id, h.distance, h.personalized) for h in result.hits]
            ranks += [h.rank for h in result.hits]
        assert pages == full
        assert ranks == list(range(1, 36))


def test_offset_past_the_end_is_empty(db):
    make_object("only", at_angle(0))
    assert search.search_objects(query_vector=at_angle(0), offset=5).hits == []


def test_empty_catalogue(db):
    result = search.search_objects(query_vector=at_angle(0), user_id="alice")
    assert result.hits == [] and result.meta["personalized_count"] == 0


# --- filters ---------------------------------------------------------------------------------


def _genre_catalogue():
    for angle in range(0, 90, 2):  # 45 objects, every third one is a comedy
        genre = "comedy" if angle % 3 == 0 else "drama"
        make_object(f"o{angle:02d}", at_angle(angle), payload={"genre": genre, "year": 2000 + angle % 5})


def test_selective_filter_is_exact_and_fills_limit(db):
    _genre_catalogue()
    result = search.search_objects(query_vector=at_angle(0), filter={"genre": "comedy"}, limit=5)
    assert [h.object_id for h in result.hits] == ["o00", "o06", "o12", "o18", "o24"]
    assert all(h.payload["genre"] == "comedy" for h in result.hits)
    assert result.meta["exact"] is True
    two_keys = ids(query_vector=at_angle(0), filter={"genre": "comedy", "year": 2000})
    assert two_keys == ["o00", "o30", "o60"]  # year = 2000 + angle % 5 == 2000 → angle % 30 == 0
    assert ids(query_vector=at_angle(0), filter={"genre": "western"}) == []


def test_non_selective_filter_through_the_index_still_fills_limit(vacuumed_index, settings, monkeypatch):
    # vacuumed: the index returns exactly what it holds, so the path below is deterministic
    _genre_catalogue()
    # Force the index path (the catalogue is tiny) with ef_search 1: without the iterative scan the index
    # would return a single row, one comedy in three.
    monkeypatch.setattr(search, "EXACT_FILTER_MIN_MATCHES", 3)
    monkeypatch.setattr(search, "EXACT_FILTER_COST_RATIO", 0.0)
    settings.STUDIO_EF_SEARCH = 1
    want = ids(query_vector=at_angle(0), filter={"genre": "comedy"}, limit=12, exact=True)
    result = search.search_objects(query_vector=at_angle(0), filter={"genre": "comedy"}, limit=12)
    assert len(want) == 12
    assert [h.object_id for h in result.hits] == want
    assert result.meta["exact"] is False and result.meta["filter_matches_at_least"] == 4
    assert result.meta["attempts"] == 1  # pgvector's iterative scan went on past ef_search until 12 passed


def test_filter_applies_to_copies_too(db):
    comedy = make_object("comedy-far", at_angle(80), payload={"genre": "comedy"})
    drama = make_object("drama-far", at_angle(85), payload={"genre": "drama"})
    make_object("comedy-near", at_angle(10), payload={"genre": "comedy"})
    make_copy(comedy, "alice", at_angle(1))
    make_copy(drama, "alice", at_angle(0))
    got = ranking(query_vector=at_angle(0), user_id="alice", filter={"genre": "comedy"})
    assert [(i, p) for i, _, p in got] == [("comedy-far", True), ("comedy-near", False)]


def test_filter_values_are_parameters_not_sql(db):
    make_object("a", at_angle(0), payload={"k": "x'); DROP TABLE studio_object; --"})
    assert ids(query_vector=at_angle(0), filter={"k": "x'); DROP TABLE studio_object; --"}) == ["a"]
    assert ids(query_vector=at_angle(0), user_id="u'; DELETE FROM studio_object; --") == ["a"]
    assert Object.objects.count() == 1


# --- ef_search and the index ------------------------------------------------------------------


@pytest.fixture
def vacuumed_index(transactional_db):
    """Committed rows and an HNSW graph without the dead rows that earlier rolled-back tests left in it
    (hundreds of identical dead vectors make a poor graph that no real catalogue has)."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM studio_objectpart")


@pytest.fixture
def random_catalogue(vacuumed_index) -> np.ndarray:
    """3,000 random single-part objects r0 … r2999, analyzed: large enough that the planner uses the index."""
    rng = np.random.default_rng(7)
    # random in 16 dimensions (padded): a graph the index searches well at the default ef_search
    vectors = np.pad(rng.normal(size=(3000, 16)), ((0, 0), (0, 384 - 16))).astype(np.float32)
    objects = Object.objects.bulk_create(Object(object_id=f"r{i}") for i in range(len(vectors)))
    ObjectPart.objects.bulk_create(
        (ObjectPart(object=obj, index=0, vector=vec) for obj, vec in zip(objects, vectors, strict=True)),
        batch_size=500,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE studio_object")
        cursor.execute("ANALYZE studio_objectpart")
    return vectors


def test_explain_uses_hnsw_index_for_the_candidates(random_catalogue):
    vectors = random_catalogue
    with connection.cursor() as cursor:
        sql = search._ranking_sql(op="<=>", personalized=True, filtered=False, exact=False)
        params = {
            "q": search.vector_literal(vectors[0]),
            "user_id": "alice",
            "need": 10,
            "parts": 40,
        }
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using objectpart_vector_hnsw" in plan
    hits = search.search_objects(query_vector=vectors[0].tolist(), user_id="alice").hits
    assert hits[0].object_id == "r0" and hits[0].distance == pytest.approx(0.0, abs=1e-5)


def test_ef_search_holds_for_the_ranking_and_is_gone_after_it(random_catalogue):
    vectors = random_catalogue
    # An HNSW scan returns at most ef_search rows: 200 index rows came back only if the setting was in force
    # (the server default of 40 would have capped them at 40).
    result = search.search_objects(query_vector=vectors[1].tolist(), limit=100)
    assert result.meta["ef_search"] == 200 and result.meta["ann_parts"] == 200
    assert result.meta["exact"] is False and len(result.hits) == 100
    with connection.cursor() as cursor:  # the same pooled connection afterwards: back to the default
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == "40"
    result = search.search_objects(query_vector=vectors[1].tolist(), limit=100, offset=900)
    assert result.meta["ef_search"] == 1000 and result.meta["ann_parts"] == 1000
    with connection.cursor() as cursor:
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == "40"


def test_set_config_is_transaction_local(db, settings):
    make_object("a", at_angle(0))
    settings.STUDIO_EF_SEARCH = 123
    with CaptureQueriesContext(connection) as queries:
        search.search_objects(query_vector=at_angle(0))
    configs = [q["sql"] for q in queries if "set_config" in q["sql"]]
    # one statement: the local setting and the ranking it governs, never a session-wide SET
    assert len(configs) == 1 and "set_config('hnsw.ef_search', '123', true)" in configs[0]
    assert "ORDER BY p.vector" in configs[0]
    assert not any(q["sql"].lstrip().upper().startswith("SET ") for q in queries)


def test_ann_matches_exact_on_random_catalogue(vacuumed_index):
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    vectors = np.pad(vectors, ((0, 0), (0, 384 - 16)))
    objects = Object.objects.bulk_create(Object(object_id=f"r{i}") for i in range(len(vectors)))
    ObjectPart.objects.bulk_create(
        (ObjectPart(object=obj, index=0, vector=vec) for obj, vec in zip(objects, vectors, strict=True)),
        batch_size=500,
    )
    for i in range(0, 50, 5):
        make_copy(objects[i], "alice", (vectors[i] + rng.normal(scale=0.3, size=384) * (np.arange(384) < 16)).tolist())
    query = vectors[3].tolist()
    exact = ranking(query_vector=query, user_id="alice", limit=20, exact=True)
    ann = ranking(query_vector=query, user_id="alice", limit=20)
    assert [i for i, _, _ in ann] == [i for i, _, _ in exact]
    assert [d for _, d, _ in ann] == pytest.approx([d for _, d, _ in exact], abs=1e-6)


def test_limits_are_checked(db):
    with pytest.raises(ValueError):
        search.search_objects(query_vector=at_angle(0), limit=0)
    with pytest.raises(ValueError):
        search.search_objects(query_vector=at_angle(0), limit=101)
    with pytest.raises(ValueError):
        search.search_objects(query_vector=at_angle(0), offset=search.MAX_OFFSET + 1)


def test_copies_hiding_the_index_fetch_move_into_the_iterative_scan(random_catalogue, settings):
    """A user whose copies replace every one of the ``ef_search`` nearest originals: the second attempt drops them
    inside the index scan, which pgvector's iterative scan continues; the page equals the exact ranking."""
    vectors = random_catalogue
    settings.STUDIO_EF_SEARCH = 20
    query = vectors[0]
    nearest = np.argsort(((vectors - query) ** 2).sum(axis=1))[:60]
    for row in nearest:
        make_copy(Object.objects.get(object_id=f"r{row}"), "alice", (vectors[row] * 1.01).tolist())
    result = search.search_objects(query_vector=query.tolist(), user_id="alice", limit=10)
    assert (result.meta["attempts"], result.meta["filtered_in_scan"], result.meta["exact"]) == (2, True, False)
    exact = search.search_objects(query_vector=query.tolist(), user_id="alice", limit=10, exact=True)
    assert [h.object_id for h in result.hits] == [h.object_id for h in exact.hits]

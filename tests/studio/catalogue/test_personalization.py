"""studio.catalogue.personalization: bulk reads and writes of per-user copies against the real database."""

from __future__ import annotations

import numpy as np
import pytest
from django.conf import settings
from django.db import connection, transaction

from studio.catalogue import personalization, services
from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart

DIM = settings.STUDIO_EMBEDDING_DIM


def _random_unit(rng, n):
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _load(rng, ids, parts=1):
    vectors = {oid: _random_unit(rng, parts) for oid in ids}
    services.copy_objects(rows=[(oid, {}, "", vectors[oid].tolist()) for oid in ids])
    return vectors


def _copy(user, obj_id, vectors, originals):
    original = personalization.original_vectors(object_ids=[obj_id])[obj_id]
    return personalization.CopyWrite(
        user_id=user,
        original_pk=original.pk,
        original_object_id=obj_id,
        vectors=vectors,
        original_vectors=originals[obj_id],
        is_average=np.zeros(len(vectors), dtype=bool),
    )


def test_original_vectors_round_trip_exact_float32(db):
    rng = np.random.default_rng(1)
    vectors = _load(rng, ["a", "b"], parts=3)
    found = personalization.original_vectors(object_ids=["a", "b", "missing"])
    assert set(found) == {"a", "b"}
    for oid in ("a", "b"):
        assert found[oid].vectors.dtype == np.float32
        np.testing.assert_array_equal(found[oid].vectors, vectors[oid])
        assert found[oid].pk == Object.objects.get(object_id=oid).pk
        assert found[oid].is_average.tolist() == [False, False, False]


def test_parts_come_back_in_index_order_whatever_order_the_table_holds_them_in(db):
    rng = np.random.default_rng(2)
    vectors = _load(rng, ["a", "b"], parts=3)
    # Rewrite the table's rows in reverse order: the rows deleted stay on their pages until a vacuum (this
    # transaction is still open), so the rows inserted again follow them in the order given.
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE parts_copy AS SELECT * FROM studio_objectpart")
        cursor.execute("DELETE FROM studio_objectpart")
        cursor.execute("INSERT INTO studio_objectpart SELECT * FROM parts_copy ORDER BY object_id DESC, index DESC")
        cursor.execute("SELECT object_id, index FROM studio_objectpart")  # heap order
        heap_order = cursor.fetchall()
    assert heap_order == sorted(heap_order, reverse=True)  # the table really is out of index order
    found = personalization.original_vectors(object_ids=["b", "a"])
    for oid in ("a", "b"):
        np.testing.assert_array_equal(found[oid].vectors, vectors[oid])


def test_a_copy_taught_again_is_updated_in_place(db):
    """Its part rows stay (same primary keys, no dead rows left for vacuum); two batches in one transaction and
    a copy whose original lost a part are both handled."""
    rng = np.random.default_rng(5)
    originals = _load(rng, ["x", "y"], parts=2)
    with transaction.atomic():
        personalization.write_copies(copies=[_copy("u1", "x", _random_unit(rng, 2), originals)], run_id=1)
    rows_before = list(PersonalizedPart.objects.order_by("index").values_list("pk", "index"))
    newer = _random_unit(rng, 2)
    with transaction.atomic():
        personalization.write_copies(copies=[_copy("u1", "y", _random_unit(rng, 2), originals)], run_id=2)
        personalization.write_copies(copies=[_copy("u1", "x", newer, originals)], run_id=2)
    copy = PersonalizedObject.objects.get(user_id="u1", original__object_id="x")
    assert list(copy.parts.order_by("index").values_list("pk", "index")) == rows_before
    stored = personalization.user_copy_vectors(keys=[("u1", copy.original_id)])[("u1", copy.original_id)]
    np.testing.assert_array_equal(stored.vectors, newer.astype(np.float16).astype(np.float32))
    assert PersonalizedPart.objects.count() == 4
    fewer = {**originals, "x": originals["x"][:1]}
    with transaction.atomic():
        personalization.write_copies(copies=[_copy("u1", "x", newer[:1], fewer)], run_id=3)
    assert list(copy.parts.values_list("pk", flat=True)) == [rows_before[0][0]]


def test_write_copies_creates_then_accumulates_and_never_touches_originals(db):
    rng = np.random.default_rng(2)
    originals = _load(rng, ["x", "y"], parts=2)
    before = {p.pk: np.asarray(p.vector) for p in ObjectPart.objects.all()}
    first = _random_unit(rng, 2)
    with transaction.atomic():
        report = personalization.write_copies(copies=[_copy("u1", "x", first, originals)], run_id=7)
    assert report.created == 1 and report.updated == 0
    copy = PersonalizedObject.objects.get(user_id="u1")
    assert copy.object_id == "x_u1" and copy.updates == 1 and copy.last_run == 7
    assert copy.drift == pytest.approx(services.cosine_drift(originals["x"], first), abs=1e-6)

    # same run again (a second batch): updates stays; a later run: updates + 1, parts replaced
    second = _random_unit(rng, 2)
    with transaction.atomic():
        personalization.write_copies(copies=[_copy("u1", "x", second, originals)], run_id=7)
    assert PersonalizedObject.objects.get(pk=copy.pk).updates == 1
    with transaction.atomic():
        report = personalization.write_copies(copies=[_copy("u1", "x", second, originals)], run_id=8)
    assert report.updated == 1 and report.ids == [copy.pk]
    copy.refresh_from_db()
    assert copy.updates == 2 and copy.last_run == 8
    assert PersonalizedPart.objects.filter(personalized=copy).count() == 2
    stored = personalization.user_copy_vectors(keys=[("u1", copy.original_id), ("u2", copy.original_id)])
    assert list(stored) == [("u1", copy.original_id)]
    as_stored = second.astype(np.float16).astype(np.float32)  # copies are halfvec
    np.testing.assert_array_equal(stored[("u1", copy.original_id)].vectors, as_stored)
    after = {p.pk: np.asarray(p.vector) for p in ObjectPart.objects.all()}
    assert before.keys() == after.keys()
    for pk in before:
        np.testing.assert_array_equal(before[pk], after[pk])


def test_write_copies_refuses_bad_input(db):
    rng = np.random.default_rng(3)
    originals = _load(rng, ["x"])
    bad = _random_unit(rng, 1)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        personalization.write_copies(copies=[_copy("u", "x", bad, originals)], run_id=None)
    good = _copy("u", "x", _random_unit(rng, 1), originals)
    with pytest.raises(ValueError, match="once"):
        personalization.write_copies(copies=[good, good], run_id=None)
    assert not PersonalizedObject.objects.exists()


def test_vectorized_drift_matches_reference():
    rng = np.random.default_rng(4)
    originals = [rng.normal(size=(n, 8)) for n in (1, 3, 2)]
    adjusted = [o + rng.normal(scale=0.3, size=o.shape) for o in originals]
    drifts = personalization.cosine_drifts(originals=originals, adjusted=adjusted)
    expected = [services.cosine_drift(o, a) for o, a in zip(originals, adjusted, strict=True)]
    np.testing.assert_allclose(drifts, expected, atol=1e-6)
    assert personalization.cosine_drifts(originals=[originals[0]], adjusted=[originals[0]])[0] == pytest.approx(0)


def test_delete_user_copies_only_that_user(db):
    rng = np.random.default_rng(5)
    originals = _load(rng, ["x", "y"])
    with transaction.atomic():
        personalization.write_copies(
            copies=[
                _copy("gone", "x", _random_unit(rng, 1), originals),
                _copy("gone", "y", _random_unit(rng, 1), originals),
                _copy("kept", "x", _random_unit(rng, 1), originals),
            ],
            run_id=1,
        )
    assert personalization.delete_user_copies(user_id="gone") == {
        "personalized_objects": 2,
        "personalized_parts": 2,
    }
    assert list(PersonalizedObject.objects.values_list("user_id", flat=True)) == ["kept"]
    assert PersonalizedPart.objects.count() == 1
    assert personalization.delete_user_copies(user_id="gone") == {
        "personalized_objects": 0,
        "personalized_parts": 0,
    }

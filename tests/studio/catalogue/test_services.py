"""studio.catalogue.services: upserts, the bulk COPY loader, deletes, cosine drift, and the HNSW index."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, transaction

from studio.catalogue import services
from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart
from tests.studio.catalogue.support import hnsw_index_definition, make_original, random_unit
from tests.support import unit_vector


def test_upsert_service_sorts_locks_and_accepts_arrays(db):
    rng = np.random.default_rng(0)
    vectors = random_unit(rng, 3)
    written = services.upsert_objects(
        items=[
            services.ObjectInput(object_id="z", vectors=[vectors[0]]),
            services.ObjectInput(object_id="a", vectors=[vectors[1].tolist(), vectors[2]], add_average=True),
        ]
    )
    assert written == 2
    parts = {(p.object.object_id, p.index): p for p in ObjectPart.objects.select_related("object")}
    assert sorted(parts) == [("a", 0), ("a", 1), ("a", 2), ("z", 0)]
    assert parts[("a", 2)].is_average and not parts[("a", 1)].is_average
    assert np.allclose(parts[("z", 0)].vector, vectors[0])
    assert services.upsert_objects(items=[]) == 0


def test_overlapping_upserts_in_opposite_orders_do_not_deadlock(transactional_db):
    import threading

    from django.db import connections

    rng = np.random.default_rng(4)
    vectors = random_unit(rng, 40)
    ids = [f"c{i:02d}" for i in range(40)]
    failures: list[BaseException] = []

    def upsert(order: list[int]) -> None:
        try:
            items = [services.ObjectInput(object_id=ids[i], vectors=[vectors[i]]) for i in order]
            for _ in range(5):
                services.upsert_objects(items=items)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upsert, args=(order,)) for order in (list(range(40)), list(range(39, -1, -1)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert Object.objects.count() == 40 and ObjectPart.objects.count() == 40


def test_copy_objects_in_an_outer_transaction_with_many_batches(db):
    """Batches share one transaction here (as in any caller's atomic block): nothing may pile up."""
    rng = np.random.default_rng(1)
    vectors = random_unit(rng, 7)
    rows = [(f"o{i}", {"i": i}, "", [vectors[i]]) for i in range(5)]
    rows.append(("o0", {"i": "again"}, "t", [vectors[5], vectors[6], vectors[5]], [False, False, True]))
    batches = []
    with transaction.atomic():
        loaded = services.copy_objects(rows=iter(rows), batch_size=2, on_batch=batches.append)
    assert loaded == 6 and batches == [2, 2, 2]
    assert Object.objects.count() == 5
    again = Object.objects.get(object_id="o0")
    assert again.payload == {"i": "again"} and again.text == "t"
    assert [(p.index, p.is_average) for p in again.parts.order_by("index")] == [(0, False), (1, False), (2, True)]
    assert ObjectPart.objects.count() == 4 + 3


def test_copy_objects_replaces_and_drops_copies_with_their_parts(db, settings):
    settings.STUDIO_DROP_PERSONALIZED_ON_UPDATE = True
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # foreign keys are checked now, not at a commit
    obj = make_original("a")
    copy = PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    services.copy_objects(rows=[("a", {}, "", [unit_vector(0.0, 1.0)])])
    assert PersonalizedObject.objects.count() == 0 and PersonalizedPart.objects.count() == 0
    assert [list(p.vector[:2]) for p in ObjectPart.objects.all()] == [[0.0, 1.0]]


def test_copy_objects_raises_what_the_reader_raised(db):
    def rows():
        yield ("a", {}, "", [unit_vector(1.0)])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        services.copy_objects(rows=rows(), batch_size=1)
    assert list(Object.objects.values_list("object_id", flat=True)) == ["a"]  # the batch before it landed


def test_delete_object_service(db):
    obj = make_original("a", unit_vector(1.0), unit_vector(0.0, 1.0))
    copy = PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    assert services.delete_object(object_id="a") == {"deleted": 1, "personalized_deleted": 1}
    assert services.delete_object(object_id="a") is None
    assert not (Object.objects.exists() or ObjectPart.objects.exists() or PersonalizedPart.objects.exists())


def test_cosine_drift():
    original = np.asarray([[1.0, 0.0], [0.0, 1.0]])
    assert services.cosine_drift(original, original * 3) == pytest.approx(0.0)
    assert services.cosine_drift(original, np.asarray([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(1.0)
    assert services.cosine_drift(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0


# --- the HNSW index ---------------------------------------------------------------------------


def test_hnsw_index_follows_metric_and_parameters(db, settings):
    definition = hnsw_index_definition()
    opclass = services.HNSW_OPCLASS[settings.STUDIO_METRIC]
    assert definition is not None
    assert "USING hnsw" in definition and opclass in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition


def test_nearest_neighbour_query_uses_the_hnsw_index(db):
    rng = np.random.default_rng(2)
    vectors = random_unit(rng, 3000)
    services.copy_objects(rows=((f"r{i}", {}, "", [vectors[i]]) for i in range(len(vectors))), batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE studio_objectpart")
        query = "[" + ",".join(f"{x:.6f}" for x in vectors[17]) + "]"
        cursor.execute(
            "EXPLAIN SELECT object_id FROM studio_objectpart ORDER BY vector <=> %s::vector LIMIT 10", [query]
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(
            "SELECT o.object_id FROM studio_objectpart p JOIN studio_object o ON o.id = p.object_id "
            "ORDER BY p.vector <=> %s::vector LIMIT 1",
            [query],
        )
        nearest = cursor.fetchone()[0]
    assert services.HNSW_INDEX_NAME in plan, plan
    assert nearest == "r17"

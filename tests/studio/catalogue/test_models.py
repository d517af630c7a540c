"""studio.catalogue.models: the constraints and indexes the database enforces."""

from __future__ import annotations

import pytest
from django.db import DataError, IntegrityError, connection, transaction

from studio.models import Object, ObjectPart, PersonalizedObject, PersonalizedPart
from tests.studio.catalogue.support import make_original
from tests.support import unit_vector


def test_object_id_is_unique(db):
    Object.objects.create(object_id="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Object.objects.create(object_id="a")


def test_part_index_is_unique_per_object(db):
    obj = make_original("a")
    make_original("b")  # index 0 of another object is fine
    with pytest.raises(IntegrityError), transaction.atomic():
        ObjectPart.objects.create(object=obj, index=0, vector=unit_vector(0.0, 1.0))


def test_personalized_copy_is_unique_per_user(db):
    obj = make_original("a")
    PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedObject.objects.create(original=obj, user_id="v", object_id="a_v")
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")


def test_personalized_part_index_unique_and_drift_nonnegative(db):
    copy = PersonalizedObject.objects.create(original=make_original("a"), user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonalizedPart.objects.create(personalized=copy, index=0, vector=unit_vector(1.0))
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonalizedObject.objects.filter(pk=copy.pk).update(drift=-0.1)


def test_vector_dimension_is_enforced_by_the_database(db):
    obj = Object.objects.create(object_id="a")
    with pytest.raises(DataError), transaction.atomic():
        ObjectPart.objects.create(object=obj, index=0, vector=[1.0, 2.0, 3.0])


def test_personalized_index_on_user_and_no_ann_index_on_copies(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'studio_personalizedobject'")
        copies = dict(cursor.fetchall())
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'studio_personalizedpart'")
        part_indexes = [row[0] for row in cursor.fetchall()]
    assert "(user_id)" in copies["personalized_user_idx"]
    assert not any("hnsw" in definition or "ivfflat" in definition for definition in part_indexes)

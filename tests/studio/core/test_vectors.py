"""studio.core.vectors: validating vectors from the outside world."""

from __future__ import annotations

import numpy as np
import pytest


def test_validate_vector_rules():
    from studio.core.vectors import InvalidVector, validate_vector, validate_vector_array

    assert validate_vector([1, 2.5, 0], dim=3) == [1.0, 2.5, 0.0]
    assert validate_vector_array(np.asarray([1, 2, 3], dtype=np.int64), dim=3).dtype == np.float32
    assert validate_vector([np.float64(1.0), np.int32(2), 3], dim=3) == [1.0, 2.0, 3.0]
    for bad in ([1, 2], [1, 2, float("nan")], [1, 2, float("inf")], [1, 2, "3"], [1, 2, True], "123", None):
        with pytest.raises(InvalidVector):
            validate_vector(bad, dim=3)
    with pytest.raises(InvalidVector, match="32-bit"):
        validate_vector([1, 2, 3.5e38], dim=3)
    with pytest.raises(InvalidVector):
        validate_vector([1, 2, 10**400], dim=3)
    with pytest.raises(InvalidVector):
        validate_vector_array(np.zeros((3, 1)), dim=3)


def test_rank_problem_judges_in_float32_as_pgvector_ranks():
    from studio.core.vectors import rank_problem

    assert rank_problem([0.6, 0.8, 0.0], metric="cosine") is None
    assert rank_problem([0.0, 0.0, 0.0], metric="cosine")[0] == "zero_vector"
    assert rank_problem([1e-40] * 3, metric="cosine")[0] == "zero_vector"  # a denormal whose square underflows
    assert rank_problem([1e-300] * 3, metric="cosine")[0] == "zero_vector"  # zero once cast to float4
    assert rank_problem([1e-15] * 3, metric="cosine") is None  # tiny but its square is still a float32
    assert rank_problem([0.0, 0.0, 0.0], metric="euclid") is None  # a zero vector ranks under euclid and dot
    for metric in ("cosine", "dot", "euclid"):
        assert rank_problem([1e20] * 3, metric=metric)[0] == "invalid_vector"  # squared length overflows


@pytest.mark.django_db
def test_vector_literal_is_short_and_parses_to_the_float32_pgvector_would_store():
    from django.db import connection

    from studio.core.vectors import vector_literal

    rng = np.random.default_rng(3)
    edge = [0.0, -0.0, 1e-40, -1e-45, 1e-300, 3.4e38, -3.4e38, 0.1, 1 / 3, 2 / 3, 16777217.0, 0.30000001192092896]
    values = np.concatenate([rng.normal(size=300), rng.normal(size=40) * 1e-20, rng.normal(size=40) * 1e30, edge])
    double_repr = "[" + ",".join(repr(float(x)) for x in values) + "]"  # what was sent before: as exact, longer
    literal = vector_literal(values.tolist())
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::vector::real[], %s::vector::real[]", [literal, double_repr])
        stored, stored_from_repr = (np.asarray(column, dtype=np.float32) for column in cursor.fetchone())
    assert np.array_equal(stored, values.astype(np.float32))  # bit for bit what float32 rounding gives
    assert np.array_equal(stored, stored_from_repr)
    assert len(literal) < 0.7 * len(double_repr)

"""Fixtures of the improvement tests (helpers live in ``tests.improvement.support``)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.improvement.support import load_catalogue, near, two_learned_users, unit


@pytest.fixture
def settled(settings):
    """Sessions count as settled at once."""
    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    return settings


@pytest.fixture
def world(db, settled):
    """Six objects around a query direction, one user session clicking the 4th-ranked object."""
    rng = np.random.default_rng(7)
    query = unit(rng)[0]
    vectors = {f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(6)}
    load_catalogue(vectors)
    return {"rng": rng, "query": query, "vectors": vectors}


@pytest.fixture
def learned(db, settled):
    """Two users, each with a used session and personalized copies."""
    return two_learned_users()


@pytest.fixture
def unblocked_database(django_db_blocker):
    """The evaluation makes and drops its own database on the server, as the command does."""
    with django_db_blocker.unblock():
        yield

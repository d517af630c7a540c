"""Schemathesis over every operation of ``/api/v1/schema`` (in process, WSGI, a bounded number of
examples): no 5xx, and every response conforms to the schema (status, content type, headers, body);
schema-violating requests are refused. ``benchmarks/fuzz_api.py`` runs the same with ≥ 200 examples
per operation over HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fuzz_api import fuzz_schema, print_reports, summarize

EXAMPLES = 20  # per operation and mode: keeps this test well under two minutes on two cores

pytestmark = pytest.mark.slow


@pytest.fixture
def seeded(transactional_db, settings):
    """An all-scopes key, a small catalogue and sessions, so lookups sometimes hit."""
    from studio.catalogue import services
    from studio.core.auth import create_api_key
    from tests.improvement.support import register

    settings.STUDIO_EMBEDDER = "none"  # text queries are refused (400) instead of loading the model
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, settings.STUDIO_EMBEDDING_DIM))
    services.copy_objects(rows=[(f"obj{i}", {"genre": f"g{i % 3}"}, "", [v.tolist()]) for i, v in enumerate(vectors)])
    for i in range(3):
        register(user_id=f"user{i}", shown=[f"obj{j}" for j in range(5)], query_vector=vectors[i], session_id=f"s{i}")
    return create_api_key(name="fuzz", scopes=["ingest", "search", "catalog", "admin"])[1]


def test_every_operation_survives_fuzzing_and_conforms_to_the_schema(seeded, monkeypatch):
    import schemathesis
    from rest_framework.throttling import SimpleRateThrottle

    from studio.config.wsgi import application

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "1000000/s"})
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application)
    reports = fuzz_schema(schema, headers={"Authorization": f"Bearer {seeded}"}, examples=EXAMPLES)
    print_reports(reports)
    totals = summarize(reports)
    assert totals["operations"] >= 15
    assert all(report.examples > 0 for report in reports)
    assert totals["server_errors"] == 0
    assert {r.label: sorted(r.failures) for r in reports if r.failures} == {}


# --- what fuzzing found, kept as regressions -------------------------------------------------------


def test_a_zero_query_vector_is_a_400_naming_the_field_not_a_500(make_client, settings):
    """benchmarks/fuzz_api.py (200 examples): a zero query vector made cosine distances NaN → 500."""
    client = make_client("search")
    for track in (True, False):
        response = client.post(
            "/api/v1/search", {"query_vector": [0.0] * settings.STUDIO_EMBEDDING_DIM, "track": track}, format="json"
        )
        assert response.status_code == 400, response.content
        assert "query_vector" in response.json()["error"]["fields"]


def test_a_zero_vector_in_the_catalogue_never_breaks_search(make_client, settings):
    dim = settings.STUDIO_EMBEDDING_DIM
    client = make_client("catalog", "search")
    objects = [{"object_id": "zero", "vector": [0.0] * dim}, {"object_id": "one", "vector": [1.0] + [0.0] * (dim - 1)}]
    loaded = client.post("/api/v1/objects", {"objects": objects}, format="json")
    assert loaded.status_code == 200
    assert [(e["index"], e["code"]) for e in loaded.json()["errors"]] == [(0, "zero_vector")]
    for track in (True, False):
        response = client.post("/api/v1/search", {"query_vector": [1.0] * dim, "track": track}, format="json")
        assert response.status_code == 200, response.content

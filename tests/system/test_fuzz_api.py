"""Schemathesis over every operation of ``/api/v1/schema`` (in process, WSGI, a bounded number of
examples): no 5xx, and every response conforms to the schema (status, content type, headers, body);
schema-violating requests are refused. ``benchmarks/fuzz_api.py`` runs the same with ≥ 200 examples
per operation over HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fuzz_api import fuzz_schema, print_reports, schema_checks, summarize

EXAMPLES = 20  # per operation and mode: keeps this test well under two minutes on two cores

pytestmark = pytest.mark.slow


def seed_sessions() -> None:
    """Exactly three sessions (s0 … s2 of user0 … user2) and nothing else in the clickstream."""
    from clickstream.models import Session
    from studio.models import ObjectPart
    from tests.improvement.support import register

    Session.objects.all().delete()  # their results and events with them
    vectors = list(ObjectPart.objects.order_by("object__object_id").values_list("vector", flat=True)[:3])
    for i, vector in enumerate(vectors):
        register(user_id=f"user{i}", shown=[f"obj{j}" for j in range(5)], query_vector=vector, session_id=f"s{i}")


@pytest.fixture
def seeded(transactional_db, settings):
    """An all-scopes key, a small catalogue and sessions, so lookups sometimes hit."""
    from studio.catalogue import services
    from studio.core.auth import create_api_key

    settings.STUDIO_EMBEDDER = "none"  # text queries are refused (400) instead of loading the model
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, settings.STUDIO_EMBEDDING_DIM))
    services.copy_objects(rows=[(f"obj{i}", {"genre": f"g{i % 3}"}, "", [v.tolist()]) for i, v in enumerate(vectors)])
    seed_sessions()
    return create_api_key(name="fuzz", scopes=["ingest", "sessions:read", "search", "catalog", "admin", "tokens"])[1]


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


def test_schema_links_chain_session_events_read_and_forget():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    created = paths["/api/v1/clickstream/sessions"]["post"]["responses"]["201"]["links"]
    operations = {op["operationId"] for ops in paths.values() for op in ops.values() if isinstance(op, dict)}
    assert {link["operationId"] for link in created.values()} <= operations
    assert created["RecordEvents"]["parameters"] == {"session_id": "$response.body#/session_id"}
    assert "ForgetUser" in paths["/api/v1/clickstream/sessions/{session_id}"]["get"]["responses"]["200"]["links"]


def test_stateful_sequences_over_the_links_never_fail(seeded, monkeypatch):
    """Schemathesis' state machine follows the OpenAPI links: create session → events → read → irrelevant →
    forget its user, with generated data; every response conforms and none is a 5xx."""
    import hypothesis
    import schemathesis
    from rest_framework.throttling import SimpleRateThrottle

    from studio.config.wsgi import application

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "1000000/s"})
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application).include(path_regex="clickstream|users")
    reached: dict[str, int] = {}

    class Sequences(schema.as_state_machine()):
        def before_call(self, case):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {seeded}"}  # not a generated one
            body = case.body if case.path == "/api/v1/clickstream/sessions" else None
            if isinstance(body, dict) and body.get("query_vector") is None and not body.get("search_query"):
                body["search_query"] = "space adventure"  # "a text or a vector": what a schema cannot say

        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, checks=schema_checks())  # the fuzzing's checks (and why: fuzz_api)

        def teardown(self):
            seed_sessions()  # every sequence starts from the same rows, so the same calls get the same answers

        def after_call(self, response, case):
            super().after_call(response, case)
            if response.status_code < 300:
                label = f"{case.method} {case.path}"
                reached[label] = reached.get(label, 0) + 1

    settings = hypothesis.settings(
        max_examples=40,
        stateful_step_count=6,
        deadline=None,
        derandomize=True,
        database=None,
        # generate only: a replayed sequence meets the rows the first one wrote (a 201 becomes a 200 replay),
        # which Hypothesis would report as flaky generation, not as a fault of the API
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    Sequences.run(settings=settings)
    assert reached.get("POST /api/v1/clickstream/sessions"), reached
    # a 2xx on a /sessions/{session_id}/… operation needs a stored session: a link carried a real id there
    assert any("{session_id}" in label for label in reached), reached


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

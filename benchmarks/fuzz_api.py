"""Schemathesis against ``/api/v1/schema``: every operation, positive and negative examples, with an
all-scopes API key. Counts server errors (5xx) and schema non-conformance per operation.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-fuzz`` (wiped per run, stopped
at the end), migrations, an all-scopes API key, a small catalogue and a few sessions (so that
lookups sometimes hit), then gunicorn on a free 127.0.0.1 port; the load is bounded by the example
count (``--examples``, default 200 per operation and mode; ``--quick`` 25).
Last line: ``{"operations", "examples", "server_errors", "nonconforming", "seconds"}``.

``fuzz_schema`` is also used by ``tests/system/test_fuzz_api.py`` (in process, over WSGI, fewer examples).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_DIR = ROOT / ".studio" / "bench-fuzz"
ALL_SCOPES = "ingest,sessions:read,search,catalog,admin,tokens"  # studio.core.models.API_SCOPES

# Checks that judge the server (5xx) and the responses against its own schema (status, content type,
# headers, body). Left out on purpose: ``negative_data_rejection`` (batch endpoints answer 200 with
# per-item rejections by design, and unknown query parameters are ignored, as HTTP APIs do),
# ``positive_data_acceptance`` (a schema cannot say "this object_id must exist" or "events only for
# objects shown", so valid-looking data is refused with a documented 4xx), and the stateful auth
# checks (tests/system/test_security.py proves 401/403 on every operation).
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@dataclass
class OperationReport:
    """What fuzzing one operation found."""

    label: str
    examples: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def schema_checks() -> list:
    """The checks of CHECK_NAMES (the fuzzing and the stateful tests judge responses by the same ones)."""
    from schemathesis import checks

    checks.load_all_checks()
    return [getattr(checks, name) for name in CHECK_NAMES]


def _exerciser(operation, mode, report: OperationReport, *, examples, headers, call, checks, seed):
    """A Hypothesis test running ``examples`` cases of one operation in one generation mode."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case):
        response = call(case) if call else case.call(headers=headers)
        report.examples += 1
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # one failure or a group of them: record, go on
            for failure in getattr(exc, "exceptions", [exc]):
                title = getattr(failure, "title", type(failure).__name__)
                samples = report.failures.setdefault(title, [])
                if len(samples) < 3:
                    body = case.body if not isinstance(case.body, bytes) else case.body[:200]
                    samples.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{str(failure)[:400]} | body={str(body)[:300]}"
                    )

    return hypothesis_seed(seed)(exercise) if seed is not None else exercise


def fuzz_schema(
    schema,
    *,
    headers: dict[str, str],
    examples: int,
    call: Callable | None = None,
    seed: int | None = 0,
) -> list[OperationReport]:
    """Fuzz every operation of ``schema`` with ``examples`` positive and ``examples`` negative
    examples; never stops at a failure (each is recorded, with a sample of its message)."""
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    checks = schema_checks()
    reports = []
    for result in schema.get_all_operations():
        operation = result.ok()
        report = OperationReport(label=operation.label)
        reports.append(report)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise = _exerciser(
                operation, mode, report, examples=examples, headers=headers, call=call, checks=checks, seed=seed
            )
            try:
                exercise()
            except Unsatisfiable:  # nothing to negate (no parameters, no body)
                if mode == GenerationMode.POSITIVE:
                    raise
    return reports


def summarize(reports: list[OperationReport]) -> dict:
    """Totals over all operations."""
    return {
        "operations": len(reports),
        "examples": sum(r.examples for r in reports),
        "server_errors": sum(r.server_errors for r in reports),
        "nonconforming": sum(len(samples) and 1 for r in reports for samples in r.failures.values()),
    }


def print_reports(reports: list[OperationReport]) -> None:
    """One line per operation, then each failure kind with samples."""
    for report in reports:
        statuses = ", ".join(f"{status}×{n}" for status, n in sorted(report.statuses.items()))
        print(f"{report.label:55s} {report.examples:5d} examples  {statuses}")
        for title, samples in report.failures.items():
            print(f"    FAIL {title}")
            for sample in samples:
                print(f"        {sample}")


# --- standalone run ---------------------------------------------------------------------------------


def _seed_data(env: dict[str, str]) -> None:
    """A few objects and sessions so that some generated lookups find something."""
    code = """
import django, random
django.setup()
from studio.catalogue import services
from clickstream.services import register_session
rng = random.Random(0)
def vec(i):
    v = [rng.uniform(-1, 1) for _ in range(384)]
    return v
services.copy_objects(rows=[(f"obj{i}", {"genre": "g" + str(i % 3)}, "", [vec(i)]) for i in range(20)])
for i in range(5):
    register_session(session_id=f"sess{i}", user_id=f"user{i}", search_query="q", query_vector=vec(i),
                     results=[{"object_id": f"obj{j}"} for j in range(5)])
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25 examples per operation and mode")
    parser.add_argument("--examples", type=int, default=200, help="examples per operation and mode")
    args = parser.parse_args()
    examples = 25 if args.quick else args.examples

    database_url, broker, cache = _stack.fresh_embedded_servers(DATA_DIR)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "studio.config.settings",
        "DATABASE_URL": database_url,
        "STUDIO_DATA_DIR": str(DATA_DIR),  # these are the embedded servers of DATA_DIR (development key allowed)
        "CELERY_BROKER_URL": broker,
        "CACHE_URL": cache,
        "STUDIO_EMBEDDER": os.environ.get("STUDIO_EMBEDDER", "none"),  # text queries: 400, fast
        "STUDIO_THROTTLE_RATE": "100000/s",
        "HF_HUB_OFFLINE": "1",
    }
    web = None
    try:
        key = _stack.migrate_and_create_key(env, name="fuzz", scopes=ALL_SCOPES)
        _seed_data(env)
        port = _stack.free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "studio.config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
            + ["--threads", "2", "--timeout", "120"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(DATA_DIR / "gunicorn.log").open("ab"),
            start_new_session=True,
        )
        import requests

        for _ in range(300):
            try:
                requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30)
                break
            except requests.RequestException:
                time.sleep(0.2)
        import schemathesis

        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/api/v1/schema")
        started = time.perf_counter()
        reports = fuzz_schema(schema, headers={"Authorization": f"Bearer {key}"}, examples=examples, seed=None)
        seconds = time.perf_counter() - started
        print_reports(reports)
        print(
            json.dumps(
                {**summarize(reports), "examples_per_operation_and_mode": examples, "seconds": round(seconds, 1)}
            )
        )
    finally:
        if web is not None:
            _stack.stop_process(web)
        _stack.stop_embedded_servers(DATA_DIR)


if __name__ == "__main__":
    main()
